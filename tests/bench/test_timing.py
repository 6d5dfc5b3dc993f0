"""bench/timing.py against a fake trainer on a fake clock: each rule of the timing loop is a test
that fails when the line implementing it is removed. No wall-clock time is read."""

import numpy as np
import pytest

from bench import timing

STEP_COST = 0.01  # fake seconds of device work per row
COMPILE_COST = 100.0  # fake seconds to compile a batch shape seen for the first time


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeTrainer:
    """Queues device work on run(); the work happens (the clock advances) only on sync(), as on
    an asynchronous device. A new batch shape costs a compilation, as with torch.compile."""

    def __init__(self, clock: FakeClock, slow_repeat: int | None = None, compile_cost: float = COMPILE_COST,
                 agreed: float | None = None) -> None:
        self.clock, self.queued, self.shapes, self.runs = clock, 0.0, set(), 0
        self.compile_cost = compile_cost
        self.agreed = agreed  # what the slowest rank of a multi-process run reports, if slower
        self.slow_repeat = slow_repeat  # this run() call (counting from 0) is 3x slower
        self.rows_run = 0

    def run(self, batches):
        factor = 3.0 if self.runs == self.slow_repeat else 1.0
        self.runs += 1
        for b in batches:
            if len(b) not in self.shapes:
                self.shapes.add(len(b))
                self.queued += self.compile_cost
            self.queued += factor * STEP_COST * len(b)
            self.rows_run += len(b)

    def gradients(self, rows):  # the loss and its backward on `rows`: compiles, does not step
        if len(rows) not in self.shapes:
            self.shapes.add(len(rows))
            self.queued += self.compile_cost
        self.queued += STEP_COST * len(rows)
        self.sync()
        return 0.0, {}

    def sync(self):
        self.clock.now += self.queued
        self.queued = 0.0

    def agree_max(self, value):
        return value if self.agreed is None else max(value, self.agreed)

    def samples_per_step(self, batch):
        return len(batch)

    def min_warmup_steps(self):  # the contract's default: nothing to capture
        return 1

    def timed_steps_multiple(self):  # the contract's default: one step per call
        return 1


def stream_of(sizes):
    while True:
        yield from (np.arange(s) for s in sizes)


def run_measure(trainer, clock, sizes=(8,), warmup=2, repeats=3, steps=5):
    shapes = timing.other_shapes(sum(sizes), sizes[0])
    return timing.measure(trainer, stream_of(sizes), warmup, repeats, steps, 1.0, shapes, clock=clock)


def test_the_clock_stops_after_sync():
    clock = FakeClock()
    out = run_measure(FakeTrainer(clock), clock)
    # 5 steps of 8 rows at STEP_COST per row: 0.4 s per repeat, 100 rows/s
    assert out["samples_per_sec_all"] == pytest.approx([100.0] * 3)
    assert out["step_time_ms"] == pytest.approx(80.0)


def test_warmup_is_excluded_and_its_first_step_is_the_compile_time():
    clock = FakeClock()
    out = run_measure(FakeTrainer(clock), clock)
    assert out["compile_time_s"] == pytest.approx(COMPILE_COST + 8 * STEP_COST)
    assert out["warmup_steps"] == 2
    assert max(out["samples_per_sec_all"]) == pytest.approx(100.0)


def test_a_short_last_batch_is_compiled_in_warmup_not_in_a_repeat():
    clock = FakeClock()
    # epochs of 8 + 8 + 3 rows: the short batch first appears in the timed region
    trainer = FakeTrainer(clock)
    out = run_measure(trainer, clock, sizes=(8, 8, 3), warmup=1, steps=3)
    assert out["warmup_other_shapes"] == [3]
    assert out["samples_per_sec_all"] == pytest.approx([100.0] * 3)  # no 100 s compile inside
    assert trainer.rows_run == 8 + 3 * 19  # the shape warm-up took no training step


def test_samples_are_counted_from_the_batches_run():
    clock = FakeClock()
    trainer = FakeTrainer(clock)
    out = run_measure(trainer, clock, sizes=(8, 8, 3), warmup=1, steps=3)
    assert out["samples_per_repeat"] == [19, 19, 19]
    assert sum(out["samples_per_repeat"]) + 8 == trainer.rows_run


def test_the_budget_covers_warmup_and_the_repeats_share_what_is_left():
    clock = FakeClock()
    out = timing.measure(FakeTrainer(clock, compile_cost=0.0), stream_of((8,)), 3, repeats=2, steps=None,
                         seconds=4.0, clock=clock)
    assert out["warmup_steps"] == 3
    # (4 s - 2 x 0.08 s of warm-up after the first step) / 2 repeats / 0.08 s per step
    assert out["steps_per_repeat"] == 24
    assert not out["too_few_steps"]


def test_compiling_the_other_shapes_does_not_shorten_the_repeats():
    clock = FakeClock()  # each new shape compiles for 10 s: the first step and the short batch
    out = timing.measure(FakeTrainer(clock, compile_cost=10.0), stream_of((8,)), 3, repeats=3, steps=None,
                         seconds=40.1, clock=clock, shapes=[np.arange(3)])
    assert out["warmup_steps"] == 3 and out["warmup_other_shapes_s"] == [pytest.approx(10.03)]
    assert out["steps_per_repeat"] == 166  # (40.1 s - 0.16 s of warm-up after the first step) / 3 / 0.08 s


def test_the_compiling_first_step_is_outside_the_budget():
    clock = FakeClock()
    out = timing.measure(FakeTrainer(clock), stream_of((8,)), 3, repeats=3, steps=None, seconds=4.0,
                         clock=clock)
    assert out["warmup_steps"] == 3  # the 100 s compile does not end the warm-up of a 4 s budget
    assert out["compile_time_s"] == pytest.approx(100.08)
    assert out["steps_per_repeat"] == 16  # (4 s - 0.16 s) / 3 / 0.08 s, not one step per repeat


def test_too_few_steps_are_reported():
    clock = FakeClock()
    out = timing.measure(FakeTrainer(clock), stream_of((8,)), 3, repeats=3, steps=None, seconds=0.5,
                         clock=clock)
    assert out["steps_per_repeat"] == 1 and out["too_few_steps"]
    assert any("fewer than 3" in w for w in timing.timing_warnings("fake", {**out, "other_bench_runs": []}, 0.5))


def test_ranks_stop_warmup_on_the_agreed_time():
    clock = FakeClock()  # this rank is fast, a peer reports 3 s: all stop after the first step
    out = timing.measure(FakeTrainer(clock, compile_cost=0.0, agreed=3.0), stream_of((8,)), 3, repeats=1,
                         steps=None, seconds=4.0, clock=clock)
    assert out["warmup_steps"] == 1


def test_other_processes_cpu_is_measured_over_the_timed_repeats():
    clock = FakeClock()
    used = {"machine": 0.0, "own": 0.0}

    class Busy(FakeTrainer):
        def sync(self):
            seconds = self.queued
            super().sync()
            used["own"] += seconds
            used["machine"] += 1.5 * seconds  # another process kept half a core busy meanwhile

    out = timing.measure(Busy(clock), stream_of((8,)), 1, 2, 5, 1.0, clock=clock,
                         cpu_probe=lambda: (used["machine"], used["own"]))
    assert out["other_processes_cores"] == pytest.approx(0.5) and out["contended"]


def test_an_unsteady_run_is_flagged():
    clock = FakeClock()
    steady = run_measure(FakeTrainer(clock), clock)
    assert not steady["unsteady"] and steady["repeat_spread"] == pytest.approx(1.0)
    clock = FakeClock()
    # run() calls: 2 warm-up, then repeats 0, 1, 2 -> call 3 is the second repeat
    out = run_measure(FakeTrainer(clock, slow_repeat=3), clock)
    assert out["unsteady"] and out["repeat_spread"] == pytest.approx(3.0)


@pytest.mark.parametrize("bad", [dict(repeats=0), dict(steps=0), dict(steps=-1), dict(warmup=0)])
def test_bad_counts_are_refused(bad):
    clock = FakeClock()
    args = dict(warmup=1, repeats=3, steps=5) | bad
    with pytest.raises(ValueError, match="must be >= 1"):
        timing.measure(FakeTrainer(clock), stream_of((8,)), args["warmup"], args["repeats"], args["steps"],
                       1.0, clock=clock)


class CapturingTrainer(FakeTrainer):
    """Like a CUDA-graph trainer: eager steps, a capture at the end of the third that costs time,
    replays after; it asks for four warm-up steps (three eager, then the first replay)."""

    CAPTURE_STEP, CAPTURE_COST = 3, 50.0

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.steps = 0

    def run(self, batches):
        super().run(batches)
        for _ in batches:
            self.steps += 1
            if self.steps == self.CAPTURE_STEP:
                self.queued += self.CAPTURE_COST

    def min_warmup_steps(self):
        return self.CAPTURE_STEP + 1


@pytest.mark.parametrize("warmup, steps, seconds", [(1, 5, 1.0), (1, None, 4.0), (2, None, 1000.0)])
def test_warmup_takes_at_least_the_trainer_s_minimum_steps(warmup, steps, seconds):
    """Neither --warmup 1 nor a budget the first (compiling) step already half used may end the
    warm-up before the capture: it would land in a timed repeat."""
    clock = FakeClock()
    out = timing.measure(CapturingTrainer(clock), stream_of((8,)), warmup, repeats=3, steps=steps,
                         seconds=seconds, clock=clock)
    assert out["warmup_steps"] == 4
    assert out["warmup_step_times_s"][2] == pytest.approx(CapturingTrainer.CAPTURE_COST + 8 * STEP_COST)
    assert out["samples_per_sec_all"] == pytest.approx([100.0] * 3)  # no capture inside a repeat


class ScanningTrainer(FakeTrainer):
    """Like JAX's trainer: steps go to the device 4 at a time, a remainder one at a time."""

    def timed_steps_multiple(self):
        return 4


@pytest.mark.parametrize("steps_that_fit, steps", [(30, 28), (6, 4), (4, 4), (3, 3)])
def test_a_budgeted_repeat_is_a_multiple_of_the_trainer_s_dispatch(steps_that_fit, steps):
    """A budget that fits `steps_that_fit` steps per repeat gets the largest multiple of 4 below it;
    one that fits fewer than 4 keeps its steps (the budget is not overrun)."""
    step = 8 * STEP_COST
    clock = FakeClock()
    trainer = ScanningTrainer(clock, compile_cost=0.0)
    seconds = step + 3 * steps_that_fit * step  # the second warm-up step, then three repeats
    out = timing.measure(trainer, stream_of((8,)), 2, 3, None, seconds + step / 2, clock=clock)
    assert out["steps_per_repeat"] == steps


def test_explicit_steps_are_timed_as_given_whatever_the_dispatch():
    clock = FakeClock()
    out = timing.measure(ScanningTrainer(clock), stream_of((8,)), 1, 3, 5, 1.0, clock=clock)
    assert out["steps_per_repeat"] == 5
