"""tinygrad-specific checks of backends/tinygrad (the generic contract tests over every backend
live in tests/contract/).

Oracles: the faithful reference model in float64 (with torch.optim.AdamW), and numpy
(spec.adamw_update: torch's AdamW). Every new tensor shape costs tinygrad a kernel compilation
(tens of seconds on 2 cores), so these tests share one tiny config and few shapes: every batch
here pads to 8 rows, every prediction to 64.
"""

from __future__ import annotations

import numpy as np
import pytest

tinygrad = pytest.importorskip("tinygrad")

from tinygrad import Context, Tensor, dtypes  # noqa: E402
from tinygrad.nn.optim import AdamW as StockAdamW  # noqa: E402

import backends  # noqa: E402
from backends import spec  # noqa: E402
from backends.tinygrad.train import TorchAdamW, padded_size  # noqa: E402
from tests.backends.problems import CFG, DEAD, assert_same_training, problem, rel_err  # noqa: E402


def numpy_adamw(param: np.ndarray, grads: list[np.ndarray], lr: float, wd: float) -> np.ndarray:
    m, v = np.zeros_like(param), np.zeros_like(param)
    for step, g in enumerate(grads, start=1):
        param, m, v = spec.adamw_update(param, g, m, v, step, lr, wd)
    return param


def test_torch_adamw_equals_the_numpy_yardstick_and_stock_tinygrad_does_not():
    rng = np.random.default_rng(2)
    start = rng.normal(size=(6, 5))
    grads = [rng.normal(size=start.shape) * 10.0 ** rng.integers(-6, 2, size=start.shape)
             for _ in range(4)]
    lr, wd = 1e-2, 0.1  # large, so that decay and the update both show
    update = numpy_adamw(start, grads, lr, wd) - start

    param = Tensor(start).contiguous().realize()
    ours = TorchAdamW({"p": param}, lr, wd)
    for g in grads:
        step_size, bias2_rsqrt = ours.next_step_scalars()
        scalars = Tensor([step_size, bias2_rsqrt], dtype=dtypes.float64)
        Tensor.realize(*ours.schedule_update({"p": param}, {"p": Tensor(g)}, scalars[0], scalars[1]))
    assert rel_err(param.numpy() - start, update) < 1e-13

    # tinygrad's own AdamW: torch's formula, but beta**t and lr in float32 even for float64
    # parameters, which is why TorchAdamW exists. If a future tinygrad fixes it, drop ours.
    stock_param = Tensor(start).contiguous().realize()
    stock = StockAdamW([stock_param], lr=lr, b1=spec.BETAS[0], b2=spec.BETAS[1], eps=spec.ADAM_EPS,
                       weight_decay=wd)
    with Context(TRAINING=1):
        for g in grads:
            stock_param.grad = Tensor(g)
            stock.step()
    assert rel_err(stock_param.numpy() - start, update) > 1e-7


def test_padding_depends_on_the_batch_alone():
    assert [padded_size(n) for n in (1, 3, 8, 9, 16, 17)] == [8, 8, 8, 16, 16, 24]


@pytest.mark.slow
def test_trainer_float64_matches_the_reference_step_by_step_with_a_short_batch():
    """One jitted trainer: forward, loss, backward and AdamW against torch in float64, over three
    steps whose last batch is short (padded to the jit's shape with zero-weight rows)."""
    params, x, y = problem(rows=19)
    reference = backends.load("reference", dtype="float64")
    batches = [np.arange(0, 8), np.arange(8, 16), np.arange(16, 19)]
    expected, expected_losses = reference.train_steps(params, [(x[i], y[i]) for i in batches], CFG)

    trainer = backends.load("tinygrad", dtype="float64").trainer(params, CFG, x, y)
    trainer.run(batches)
    trainer.sync()
    got = trainer.params()
    # The first loss proves the loss is computed from the pre-update weights (the footgun).
    assert_same_training(got, trainer.losses(), expected, expected_losses, params)
    preds = trainer.predict(x[:5])
    assert preds.shape == (5, CFG.n_cycles)
    assert rel_err(preds, reference.forward(expected, x[:5], CFG)) < 1e-10
    many = trainer.predict(x[np.arange(150) % len(x)])  # 3 chunks: the jit runs, records, replays
    assert np.array_equal(many[:5], preds) and np.array_equal(many[19:24], preds)

    # Gradients at the trained parameters, without stepping (5 rows pad to the step's 8).
    rows = np.arange(3, 8)
    loss, grads = trainer.gradients(rows)
    ref_loss, ref_grads = reference.loss_and_grad(expected, x[rows], y[rows], CFG)
    assert abs(loss - ref_loss) / ref_loss < 1e-12
    for name, ref_grad in ref_grads.items():
        if name in DEAD:  # F7: zero true gradient; both sides carry rounding noise only
            assert np.abs(grads[name]).max() < 1e-12, name
        else:
            assert rel_err(grads[name], ref_grad) < 1e-10, name
    assert np.array_equal(trainer.params()["prompt"], got["prompt"]) and len(trainer.losses()) == 3


def test_bad_inputs_are_one_line_value_errors():
    params, x, y = problem(rows=4)
    b = backends.load("tinygrad")
    cases = [
        (lambda: b.trainer(params, CFG, x, y, no_such_option=1), "no_such_option"),
        (lambda: b.trainer(params, CFG, x, y, parallel="ddp"), "parallel"),
        (lambda: backends.load("tinygrad", device="gpu"), "unknown device"),
        (lambda: backends.load("tinygrad", device="metal", dtype="float64"), "float64"),
    ]
    try:
        backends.load("tinygrad", device="cuda")
    except ValueError as e:  # absent here: the message must name the device, in one line
        assert "cuda" in str(e) and "\n" not in str(e)
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


def test_beam_search_is_timed_and_undone(monkeypatch):
    """BeamSearch sets tinygrad's BEAM for what runs inside, adds the time each kernel search
    takes (a fake clock here: 5 s per search) and puts tinygrad's search function back after."""
    from tinygrad.codegen.opt import search as tinygrad_search
    from tinygrad.helpers import BEAM

    from backends.tinygrad import train

    now = [0.0]
    monkeypatch.setattr(train.time, "perf_counter", lambda: now[0])

    def fake_search(*args, **kwargs):
        now[0] += 5.0
        return "searched"

    monkeypatch.setattr(tinygrad_search, "beam_search", fake_search)
    beam = train.BeamSearch(2)
    with beam.active():
        assert BEAM.value == 2
        assert tinygrad_search.beam_search() == "searched" and tinygrad_search.beam_search() == "searched"
    assert beam.seconds == 10.0 and beam.kernels == 2
    assert tinygrad_search.beam_search is fake_search
    with Context(BEAM=3), train.BeamSearch(0).active():
        assert BEAM.value == 0  # the option decides, not an outer BEAM setting


@pytest.mark.slow
def test_beam_search_runs_on_a_real_kernel_and_computes_the_same():
    """A real BEAM=1 search goes through the timed wrapper (or its cache look-up does) and the
    kernel it picks computes what numpy does."""
    from backends.tinygrad import train

    a = np.arange(12 * 33, dtype=np.float32).reshape(12, 33) / 100
    beam = train.BeamSearch(1)
    with beam.active():
        got = (Tensor(a) * 2 + 1).sum(axis=1).numpy()
    assert beam.kernels >= 1
    np.testing.assert_allclose(got, (a * 2 + 1).sum(axis=1), rtol=1e-6)


def test_beam_option_is_checked_and_noted():
    params, x, y = problem(rows=4)
    b = backends.load("tinygrad")
    with pytest.raises(ValueError, match="beam must be >= 0"):
        b.trainer(params, CFG, x, y, beam=-1)
    assert b.trainer(params, CFG, x, y).run_notes() == {}
    assert b.trainer(params, CFG, x, y, beam="2").run_notes() == {"beam": 2, "beam_search_s": 0.0,
                                                                     "beam_kernels": 0}


def test_timing_warm_up_covers_the_jit_recording_call():
    # With no time budget left after the first step, warm-up still takes the trainer's minimum:
    # TinyJit's recording call (the second) is never inside a timed repeat.
    from bench import timing

    params, x, y = problem(rows=24)
    trainer = backends.load("tinygrad", device="cpu", dtype="float32").trainer(params, CFG, x, y)
    stream = timing.batch_stream(len(x), 8, seed=0)
    out = timing.measure(trainer, stream, warmup=1, repeats=1, steps=None, seconds=1e-9)
    assert trainer.min_warmup_steps() == 2 and out["warmup_steps"] == 2
    jit = next(iter(trainer._jit_steps.values()))
    assert jit.cnt >= 2  # the TinyJit has recorded: what follows are replays
