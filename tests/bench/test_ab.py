"""bench/ab.py: the interleaved A/B of configurations. Fake trainers of known speed on a fake clock
check the order, the medians and both ratios against hand values; the command line is run once
on the reference at a tiny size, and its bad arguments are one-line errors."""

import subprocess
import sys

import numpy as np
import pytest

from bench import ab


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SpeedTrainer:
    """A trainer whose step takes `seconds_per_row` x rows on the fake clock, times the machine's
    current slowness; every run() is logged, so the test sees the order of the samples."""

    def __init__(self, name, seconds_per_row, clock, machine, log) -> None:
        self.name, self.seconds_per_row, self.clock, self.machine, self.log = name, seconds_per_row, clock, machine, log

    def run(self, batches):
        self.log.append((self.name, len(batches)))
        self.clock.now += sum(len(b) for b in batches) * self.seconds_per_row * self.machine["slowness"]

    def sync(self):
        pass

    def gradients(self, rows):
        return 0.0, {}

    def agree_max(self, value):
        return value

    def samples_per_step(self, batch):
        return len(batch)

    def min_warmup_steps(self):
        return 1

    def timed_steps_multiple(self):
        return 1


def endless_batches():
    while True:
        yield np.arange(8)


def run_fakes(speeds: dict, rounds: int, slowness=lambda calls: 1.0):
    """Samples of fake trainers, seconds per row `speeds[option]`, the machine's slowness a
    function of how many timed samples were taken before."""
    clock, machine, log = Clock(), {"slowness": 1.0}, []

    def make(options):
        trainer = SpeedTrainer(options["name"], speeds[options["name"]], clock, machine, log)
        run = trainer.run

        def run_and_drift(batches):  # a timed sample is the one call with several batches
            if len(batches) > 1:
                machine["slowness"] = slowness(sum(1 for _, n in log if n > 1))
            run(batches)
        trainer.run = run_and_drift
        return trainer

    configs = [ab.Config(name, {"name": name}, {}) for name in speeds]
    samples, first, _ = ab.in_process_samples(make, configs, endless_batches, [], rounds, steps=4, warmup=2,
                                           clock=clock)
    return samples, first, log


def test_known_speeds_give_their_rates_and_ratio():
    # 0.01 s per row is 100 rows/s, 0.005 s is 200: B is exactly twice A
    samples, first, _ = run_fakes({"A": 0.01, "B": 0.005}, rounds=3)
    assert samples == [pytest.approx([100.0] * 3), pytest.approx([200.0] * 3)]
    assert first == pytest.approx([0.08, 0.04])  # the first warm-up step: 8 rows
    rows = ab.summarise(["A", "B"], samples)
    assert rows[1]["ratio"] == pytest.approx(2.0) and rows[1]["paired_ratio"] == pytest.approx(2.0)
    assert rows[0]["ratio"] == pytest.approx(1.0)


def test_rounds_alternate_and_flip_their_order():
    _, _, log = run_fakes({"A": 0.01, "B": 0.02, "C": 0.03}, rounds=3)
    timed = [name for name, n in log if n > 1]
    assert timed == ["A", "B", "C", "C", "B", "A", "A", "B", "C"]
    warmups = [name for name, n in log if n == 1]
    assert warmups[:2] == ["A", "A"]  # warm-up 2 in round 1, then one untimed step before each sample
    assert len(warmups) == 2 * 3 + 1 * 3 * 2


def test_paired_ratio_cancels_a_machine_that_slows_down_between_rounds():
    # the machine is 1x, 1x, 3x, 3x, 2x, 2x slow for the six timed samples (A B | B A | A B);
    # B is truly 2x faster. Samples/s: A 100, 100/3, 50; B 200, 200/3, 100.
    slow = [1.0, 1.0, 3.0, 3.0, 2.0, 2.0]
    samples, _, _ = run_fakes({"A": 0.01, "B": 0.005}, rounds=3, slowness=lambda k: slow[k])
    assert samples[0] == pytest.approx([100.0, 100 / 3, 50.0])
    assert samples[1] == pytest.approx([200.0, 200 / 3, 100.0])
    rows = ab.summarise(["A", "B"], samples)
    assert rows[0]["samples_per_sec"] == pytest.approx(50.0) and rows[1]["samples_per_sec"] == pytest.approx(100.0)
    assert rows[1]["paired_ratio"] == pytest.approx(2.0)


def test_summary_of_hand_samples():
    rows = ab.summarise(["a", "b"], [[10.0, 30.0, 20.0], [15.0, 30.0, 50.0]])
    # medians 20 and 30: ratio 1.5; per-round ratios 1.5, 1.0, 2.5: median 1.5
    assert rows[1]["samples_per_sec"] == 30.0 and rows[1]["min"] == 15.0 and rows[1]["max"] == 50.0
    assert rows[1]["ratio"] == pytest.approx(1.5) and rows[1]["paired_ratio"] == pytest.approx(1.5)
    rows = ab.summarise(["a", "b"], [[10.0, 10.0, 40.0], [20.0, 10.0, 10.0]])
    assert rows[1]["ratio"] == pytest.approx(1.0) and rows[1]["paired_ratio"] == pytest.approx(1.0)


def test_config_words_become_options_and_environment():
    config = ab.parse_config('steps_per_call=1 env.XLA_FLAGS="--a=1 --b" env.MALLOC_TOP_PAD_=')
    assert config.options == {"steps_per_call": "1"}
    assert config.env == {"XLA_FLAGS": "--a=1 --b", "MALLOC_TOP_PAD_": None}
    assert ab.parse_config("  ").label == "(defaults)"
    env = ab.child_environment({"MALLOC_TOP_PAD_": "1", "KEEP": "x"}, config)
    assert env == {"KEEP": "x", "XLA_FLAGS": "--a=1 --b"}


@pytest.mark.parametrize("text", ["steps_per_call", "=3", "env.=3", 'variant="r5'])
def test_bad_config_words_are_one_line_errors(text):
    with pytest.raises(ValueError, match="--config"):
        ab.parse_config(text)


def test_round_order():
    assert ab.round_order(2, 0) == [0, 1] and ab.round_order(2, 1) == [1, 0] and ab.round_order(2, 2) == [0, 1]


TINY = ["--backend", "reference", "--n-prompts", "4", "--d-model", "8", "--n-cycles", "2", "--data",
        "synthetic:tiny"]


def bench_ab(*args):
    return subprocess.run([sys.executable, "-m", "bench", "ab", *TINY, *args], capture_output=True, text=True,
                          timeout=300)


def test_command_prints_one_row_per_config():
    done = bench_ab("--config", "", "--config", "", "--rounds", "2", "--steps", "1", "--warmup", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "2 rounds of 1 steps (one process, interleaved)" in lines[0]
    assert len([line for line in lines if line.startswith("| (defaults)")]) == 2


@pytest.mark.parametrize("args, message", [
    (["--config", "a=1"], "at least two --config"),
    (["--config", "", "--config", "no_such_option=1"], "unknown option"),
    (["--config", "", "--config", "oops"], "expected key=value"),
])
def test_bad_arguments_are_one_line_errors(args, message):
    done = bench_ab(*args)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr
