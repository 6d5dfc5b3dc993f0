"""The torch backend's GPU and TPU paths, checked on the CPU: what they decide (option checks,
which copies block, when a CUDA graph is captured, which matmul precision is in force) runs here
with the device's answers mocked; what only the device can do is left to it.
"""

from __future__ import annotations

import contextlib
import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import backends  # noqa: E402
from backends.torch import device as torch_device  # noqa: E402
from backends.torch import train  # noqa: E402
from tests.backends.problems import CFG, problem  # noqa: E402


@pytest.fixture
def fake_gpu(monkeypatch):
    """torch believes a CUDA GPU is present; the test sets its compute capability."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def with_capability(major: int, minor: int) -> backends.Backend:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_: (major, minor))
        return backends.load("torch", device="cuda")

    return with_capability


@pytest.fixture
def ieee_afterwards():
    """Tests that change the process-wide matmul precision restore float32 arithmetic."""
    yield
    torch_device.pin_matmul_precision("cpu", "ieee")


# ---------------------------------------------------------------------------------------------
# amp: bf16 only where the GPU has it


@pytest.mark.parametrize("capability, amp", [((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_bf16_is_refused_below_compute_capability_8_and_the_ladder_s_choice_follows(fake_gpu, capability,
                                                                                    amp):
    backend = fake_gpu(*capability)
    assert torch_device.preferred_amp("cuda") == amp
    backend.parse_options({"amp": amp})  # the preferred one is accepted
    if amp == "fp16":
        # A T4 (7.5): torch.cuda.is_bf16_supported() says yes there, through emulation.
        with pytest.raises(ValueError, match="compute capability >= 8.0") as info:
            backend.parse_options({"amp": "bf16"})
        assert "\n" not in str(info.value)


def test_off_cuda_the_preferred_amp_is_bf16():
    assert torch_device.preferred_amp("cpu") == torch_device.preferred_amp("xla") == "bf16"


# ---------------------------------------------------------------------------------------------
# index copies


def test_indices_go_to_a_gpu_from_pinned_memory_without_blocking(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append("pin") or self)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: calls.append((a, k)) or self)
    rows = np.array([3, 1, 2], dtype=np.int64)
    out = torch_device.indices_to(rows, torch.device("cuda"))
    assert calls == ["pin", ((torch.device("cuda"),), {"non_blocking": True})]
    assert out.dtype == torch.int64 and out.tolist() == [3, 1, 2]


def test_indices_stay_plain_copies_off_cuda():
    rows = np.array([0, 4], dtype=np.int32)
    out = torch_device.indices_to(rows, torch.device("cpu"))
    assert out.dtype == torch.int64 and not out.is_pinned() and out.tolist() == [0, 4]


# ---------------------------------------------------------------------------------------------
# TF32


def test_float32_matmuls_are_pinned_to_ieee_and_recorded(ieee_afterwards):
    torch.set_float32_matmul_precision("high")  # someone else's setting in the same process
    torch.backends.cudnn.allow_tf32 = True
    params, x, y = problem(rows=8)
    backend = backends.load("torch")
    backend.trainer(params, CFG, x, y)
    assert torch.get_float32_matmul_precision() == "highest"
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert backend.versions()["matmul_precision"] == "ieee"


def test_tf32_is_cuda_float32_only_and_labelled_not_exact(fake_gpu, ieee_afterwards):
    assert fake_gpu(8, 0).inexact_options({"matmul_precision": "tf32"}) == ["matmul_precision=tf32"]
    for device, dtype in (("cpu", "float32"), ("cuda", "float64")):
        with pytest.raises(ValueError, match="matmul_precision=tf32 needs device cuda and dtype float32"):
            backends.load("torch", device=device, dtype=dtype).parse_options({"matmul_precision": "tf32"})
    torch_device.pin_matmul_precision("cuda", "tf32")
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert torch_device.matmul_precision("cuda") == "tf32"


# ---------------------------------------------------------------------------------------------
# CUDA graphs: capture in warm-up


def test_min_warmup_steps_is_one_without_cuda_graphs():
    params, x, y = problem(rows=8)
    assert backends.load("torch").trainer(params, CFG, x, y).min_warmup_steps() == 1


def test_the_graph_is_captured_at_the_end_of_the_last_warmup_step(monkeypatch):
    """torch.cuda's stream and graph calls are stubbed (the captured block then runs eagerly,
    which is fine here: only the schedule is checked). The capture must fall inside the
    `min_warmup_steps()` steps bench warms up with, and replays start right after it."""
    events = []

    class FakeGraph:
        def replay(self) -> None:
            events.append("replay")

    @contextlib.contextmanager
    def capture(graph: FakeGraph):
        events.append("capture")
        yield

    stream = types.SimpleNamespace(wait_stream=lambda other: None)
    monkeypatch.setattr(torch.cuda, "Stream", lambda: stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", capture)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: self)

    params, x, y = problem(rows=8)
    trainer = backends.load("torch").trainer(params, CFG, x, y)
    trainer.options = {**trainer.options, "cuda_graphs": True}  # cuda_graphs needs cuda otherwise
    warmup = trainer.min_warmup_steps()
    assert warmup == train.GRAPH_WARMUP_STEPS + 1
    per_step = []
    for _ in range(warmup + 1):
        events.clear()
        trainer.step(np.arange(8))
        per_step.append(list(events))
    assert per_step == [[]] * (warmup - 2) + [["capture"], ["replay"], ["replay"]]
    assert len(trainer.losses()) == warmup + 1


# ---------------------------------------------------------------------------------------------
# torch_xla, faked: only the calls the backend makes


@pytest.fixture
def fake_torch_xla(monkeypatch):
    precision = {"level": "default"}
    xla = types.ModuleType("torch_xla")
    xla.__version__ = "0.fake"
    xla_backends = types.ModuleType("torch_xla.backends")
    xla_backends.set_mat_mul_precision = lambda level: precision.update(level=level)
    xla_backends.get_mat_mul_precision = lambda: precision["level"]
    xla.backends = xla_backends
    monkeypatch.setitem(sys.modules, "torch_xla", xla)
    monkeypatch.setitem(sys.modules, "torch_xla.backends", xla_backends)
    return precision


def test_xla_float32_matmuls_are_pinned_to_highest(fake_torch_xla):
    assert torch_device.matmul_precision("xla") == "xla-default"  # a TPU's default: one bf16 pass
    torch_device.pin_matmul_precision("xla", "ieee")
    assert fake_torch_xla["level"] == "highest" and torch_device.matmul_precision("xla") == "ieee"


@pytest.mark.parametrize("options, message", [
    ({"amp": "fp16"}, "amp=fp16 needs a CUDA device"),
    ({"matmul_precision": "tf32"}, "needs device cuda"),
    ({"optimizer": "fused"}, "not available on xla"),
])
def test_xla_refuses_what_it_cannot_do(fake_torch_xla, options, message):
    backend = backends.load("torch", device="xla")
    backend.parse_options({"amp": "bf16", "compile": True})  # autocast("xla") and openxla
    with pytest.raises(ValueError, match=message):
        backend.parse_options(options)


# ---------------------------------------------------------------------------------------------
# Collective timeouts


@pytest.mark.parametrize("timeout_s, compile_, expected", [
    (None, False, torch_device.TIMEOUT_S),
    (None, True, torch_device.COMPILE_TIMEOUT_S),  # ranks compile their first step at their own speed
    (20.0, True, 20.0),  # an explicit value is kept
])
def test_the_collective_timeout_allows_for_compiling_ranks(timeout_s, compile_, expected):
    options = backends.load("torch").parse_options({"timeout_s": timeout_s, "compile": compile_})
    assert torch_device.collective_timeout_s(options) == expected
