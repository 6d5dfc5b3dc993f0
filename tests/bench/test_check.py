"""`bench check` discriminates: the correct reference in float32 passes, and each defect that a
fast rewrite could plausibly make, injected into a copy of the reference trainer here (never in
the project's code), fails on the quantity that should catch it."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backends import spec
from bench import check
from reference.backend import ReferenceBackend, ReferenceTrainer


def broken_backend(dtype, defect):
    """The reference backend whose trainer has `defect(trainer)` applied after it is built."""

    class BrokenTrainer(ReferenceTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            defect(self)

    class Broken(ReferenceBackend):
        trainer_class = BrokenTrainer

    return Broken(device="cpu", dtype=dtype)


def verdict(dtype, defect):
    return check.check_trainer("reference", dtype=dtype, backend=broken_backend(dtype, defect))


def layer_norms(trainer):
    return [m for m in trainer.model.modules() if isinstance(m, torch.nn.LayerNorm)]


def no_defect(trainer):
    del trainer


def layer_norm_eps_changed(trainer):
    for ln in layer_norms(trainer):
        ln.eps = 1e-3


def one_gradient_scaled(trainer):
    trainer.model.prompt.register_hook(lambda g: g * 1.001)


def decay_dropped(trainer):
    trainer.optimizer = torch.optim.AdamW(trainer.model.parameters(), lr=trainer.lr, weight_decay=0.0,
                                          betas=spec.BETAS, eps=spec.ADAM_EPS)


def decay_coupled(trainer):  # L2 in the gradient (Adam), not AdamW's decoupled decay
    trainer.optimizer = torch.optim.Adam(trainer.model.parameters(), lr=trainer.lr,
                                         weight_decay=trainer.weight_decay, betas=spec.BETAS, eps=spec.ADAM_EPS)


def bf16_autocast(trainer):
    forward = trainer.model.forward

    def autocast_forward(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return forward(x).float()

    trainer.model.forward = autocast_forward


def one_pass_variance(trainer):
    def forward(ln, x):
        mean = x.mean(-1, keepdim=True)
        var = (x * x).mean(-1, keepdim=True) - mean * mean  # cancels when |mean| >> std
        return (x - mean) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias

    for ln in layer_norms(trainer):
        ln.forward = forward.__get__(ln)


def tf32(x):
    """Round float32 to TF32's 10-bit mantissa (nearest), as tensor cores do with matmul inputs."""
    if x.dtype != torch.float32:
        return x
    bits = x.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


@pytest.fixture
def tf32_matmuls(monkeypatch):
    linear, matmul = F.linear, torch.Tensor.__matmul__
    monkeypatch.setattr(F, "linear", lambda x, w, b=None: linear(tf32(x), tf32(w), b))
    monkeypatch.setattr(torch.Tensor, "__matmul__", lambda a, b: matmul(tf32(a), tf32(b)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_correct_reference_passes(dtype):
    result = verdict(dtype, no_defect)
    assert result["verdict"] == "pass", check.format_report(result)


@pytest.mark.parametrize("defect, dtype, caught_by", [
    (layer_norm_eps_changed, "float32", "predictions"),
    (one_gradient_scaled, "float32", "gradients"),
    (bf16_autocast, "float32", "predictions"),
    (decay_coupled, "float64", "updates"),
    (decay_dropped, "float64", "updates"),
])
def test_a_defect_fails_on_the_quantity_that_shows_it(defect, dtype, caught_by):
    result = verdict(dtype, defect)
    assert result["verdict"] == "FAIL", check.format_report(result)
    assert caught_by in result["failed"], check.format_report(result)


def test_tf32_matmul_inputs_fail_in_float32(tf32_matmuls):
    result = verdict("float32", no_defect)
    assert result["verdict"] == "FAIL", check.format_report(result)
    assert {"predictions", "gradients", "updates"} <= set(result["failed"]), check.format_report(result)


def test_dropped_weight_decay_is_invisible_in_float32_because_the_original_does_none():
    # 1 - lr * wd = 1 - 3e-12 rounds to 1.0 in float32: the original decays nothing in float32,
    # so a float32 trainer without decay computes exactly what the original computes.
    assert np.float32(1) - np.float32(spec.LR * spec.WEIGHT_DECAY) == np.float32(1)
    assert verdict("float32", decay_dropped)["verdict"] == "pass"


def test_amp_is_never_called_a_pass():
    result = check.check_trainer("torch", options={"amp": "bf16"})
    assert result["verdict"].startswith("not exact: amp=bf16, deviation "), result["verdict"]


def test_another_batch_size_is_labelled_not_exact():
    result = check.check_trainer("reference", batch_size=16)
    assert result["verdict"].startswith("not exact: batch size 16"), result["verdict"]


def test_norm_dev_is_relative_to_the_reference_norm():
    ref = np.array([3.0, 4.0])
    assert check.norm_dev(ref + [0.0, 5e-3], ref) == pytest.approx(1e-3)
    assert check.norm_dev(np.zeros(2), np.zeros(2)) == 0.0
    with pytest.raises(ValueError, match="shape"):
        check.norm_dev(np.zeros(3), ref)


def test_a_one_pass_variance_is_harmless_here_because_layer_norm_inputs_are_scale_free():
    # E[x^2] - E[x]^2 loses digits as mean^2/var grows. This model's LayerNorms normalise across
    # d_model, where the inputs vary with the weights (relu(x * w_d + b_d), a parameter, a dense
    # layer), so mean^2/var stays O(1) however large the raw features are: the one-pass variance
    # computes the original to float32 rounding, and the check rightly passes it.
    result = verdict("float32", one_pass_variance)
    assert result["verdict"] == "pass", check.format_report(result)
    w = torch.nn.init.uniform_(torch.empty(4096), -1, 1)
    h = F.relu(1e9 * w)
    assert (h.mean() ** 2 / h.var()).item() < 1.0
