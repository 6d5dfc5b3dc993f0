"""`bench roofline`: the kernel counter against hand counts, the ideal fusion and the roofline
arithmetic against hand computations, and the files of a real run at a tiny size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report, roofline
from bench.published_peaks import DEVICES, Device

torch = pytest.importorskip("torch")
kernel_count = pytest.importorskip("bench.kernel_count")

ROOT = Path(__file__).resolve().parents[2]
F32 = 4  # bytes


def test_a_matmul_and_a_relu_are_two_kernels_counted_by_hand():
    a, b = torch.randn(4, 8), torch.randn(8, 16)
    ops = kernel_count.count(lambda: torch.relu(a @ b))
    assert [(op.name, op.kind) for op in ops] == [("mm", "matmul"), ("relu", "elementwise")]
    mm, relu = ops
    assert mm.flops == 2 * 4 * 8 * 16
    assert mm.bytes == (4 * 8 + 8 * 16 + 4 * 16) * F32  # reads a and b, writes the product
    assert relu.flops == 4 * 16
    assert relu.bytes == (4 * 16 + 4 * 16) * F32


def test_views_are_not_kernels_and_a_broadcast_axis_is_read_once():
    a = torch.randn(4, 8)
    assert kernel_count.count(lambda: (a.t(), a.view(2, 16), a.unsqueeze(0), a[1:], a.expand(3, 4, 8))) == []
    (add,) = kernel_count.count(lambda: a.expand(3, 4, 8) + 1.0)
    assert add.kind == "elementwise"
    assert add.bytes == (4 * 8 + 3 * 4 * 8) * F32  # the stride-0 axis holds the same 32 numbers


def test_an_overwrite_does_not_read_its_target_and_an_in_place_add_does():
    a, b = torch.zeros(10), torch.ones(10)
    zero, add = kernel_count.count(lambda: (a.zero_(), a.add_(b)))
    assert zero.bytes == 10 * F32
    assert add.bytes == 3 * 10 * F32


def test_optimizer_steps_are_optimizer_kernels_and_default_adamw_counts_as_foreach():
    p = torch.nn.Parameter(torch.ones(10))
    optimizer = torch.optim.AdamW([p])
    p.grad = torch.ones(10)
    optimizer.step()  # creates the state
    ops = kernel_count.count(optimizer.step)
    assert ops and all(op.kind == "optimizer" for op in ops)
    assert any(op.name.startswith("_foreach_") for op in ops)
    assert optimizer.param_groups[0]["foreach"] is True


def test_fused_adamw_reads_param_grad_and_moments_and_writes_param_and_moments():
    p = torch.nn.Parameter(torch.ones(1000))
    optimizer = torch.optim.AdamW([p], fused=True)
    p.grad = torch.ones(1000)
    optimizer.step()
    adamw = [op for op in kernel_count.count(optimizer.step) if op.name == "_fused_adamw_"]
    assert len(adamw) == 1
    assert adamw[0].bytes == (4 + 3) * 1000 * F32 + F32  # 28 B per parameter (docs/SPEC.md §8), + the step


def test_ideal_fusion_keeps_the_matmul_and_folds_the_chain_into_its_external_bytes():
    a, b = torch.randn(4, 8), torch.randn(8, 16)
    ops = kernel_count.count(lambda: torch.relu(a @ b) * 2.0 + 1.0)
    assert [op.name for op in ops] == ["mm", "relu", "mul", "add"]
    mm, chain = kernel_count.fuse_chains(ops)
    assert mm == ops[0]
    assert chain.flops == 3 * 4 * 16
    assert chain.bytes == (4 * 16 + 4 * 16) * F32  # reads the product, writes the result: nothing between


INVENTED = Device("x", "invented", fp32_tflops=1.0, tensor_tflops=2.0, half_tflops=4.0, vector_tflops=0.5,
                  gb_per_s=100.0, launch_us=10.0, sources=("invented for the test",), count=2,
                  link_gb_per_s=10.0)


def test_roofline_arithmetic_on_an_invented_device():
    ops = [kernel_count.Op("mm", "matmul", "forward", flops=2e9, bytes=int(1e8)),
           kernel_count.Op("relu", "elementwise", "forward", flops=1e6, bytes=int(1e9))]
    # exact: the mm is compute-bound (2e9 / 1e12 = 2 ms > 1e8 / 1e11 = 1 ms), the relu memory-bound
    # (1e9 / 1e11 = 10 ms > 1e6 / 5e11 = 2 us); two launches of 10 us
    exact = roofline.estimate(ops, INVENTED, "exact", INVENTED.launch_us)
    assert exact["compute_ms"] == pytest.approx(2.0)
    assert exact["memory_ms"] == pytest.approx(10.0)
    assert exact["launches_ms"] == pytest.approx(0.02)
    assert exact["step_ms"] == pytest.approx(12.02)
    assert exact["samples_per_sec"] == pytest.approx(8 / 12.02e-3)
    assert exact["bound"] == "memory"
    # tensor units: the mm takes 1 ms either way, so it counts as memory time
    tensor = roofline.estimate(ops, INVENTED, "tensor", INVENTED.launch_us)
    assert (tensor["compute_ms"], tensor["memory_ms"]) == (0.0, pytest.approx(11.0))
    # an all-reduce of 1e7 bytes over 10 GB/s: 1 ms, plus one launch
    shared = roofline.estimate(ops, INVENTED, "exact", INVENTED.launch_us, transfer_bytes=int(1e7))
    assert shared["all_reduce_ms"] == pytest.approx(1.01)
    assert shared["step_ms"] == pytest.approx(13.03)


def test_every_device_names_its_sources():
    assert {d.key for d in DEVICES} == {"t4", "t4x2", "a100", "h100", "tpu_v5e"}
    for device in DEVICES:
        assert device.sources and all(len(s) > 20 for s in device.sources)
        assert device.fp32_tflops <= device.tensor_tflops <= device.half_tflops


def test_a_real_run_writes_estimates_for_every_rung(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench", "roofline", "--n-columns", "37", "--d-model", "8",
                           "--n-prompts", "8", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "roofline_estimates.json").read_text())
    assert record["kind"] == "roofline estimate"
    assert record["config"] == {"n_columns": 37, "n_prompts": 8, "d_model": 8, "n_cycles": 6}
    assert [d["key"] for d in record["devices"]] == [d.key for d in DEVICES]
    assert [r["key"] for r in record["rungs"]] == [r.key for r in roofline.ladder.RUNGS]
    rungs = {r["key"]: r for r in record["rungs"]}
    for rung in record["rungs"]:
        assert set(rung["estimates"]) == {d.key for d in DEVICES}
        for est in rung["estimates"].values():
            if "skipped" in est:
                continue
            for precision in ("exact", "tensor"):
                assert est[precision]["step_ms"] > 0 and est[precision]["samples_per_sec"] > 0
                assert est[precision]["bound"] in ("launches", "memory", "compute", "all-reduce")
    assert "counted" not in rungs["r5-fused"] and "C++" in rungs["r5-fused"]["skipped"]
    assert "skipped" in rungs["cells"]["estimates"]["t4"] and rungs["cells"]["estimates"]["t4x2"]["how"] == "cells"
    assert rungs["cells"]["counted"]["n_cycles"] == 3
    eager, compiled = rungs["fused"]["estimates"]["t4"], rungs["compile"]["estimates"]["t4"]
    assert compiled["kernels"] < eager["kernels"] and compiled["bytes"] < eager["bytes"]
    table = (tmp_path / "roofline_estimates.md").read_text()
    assert "ESTIMATES" in table and "not measurements" in table
    # bench report: no "skipped" note for the file, and a subsection with the exact table
    assert report.load_results(tmp_path) == ([], [], [])
    section = report.render_section({}, [], {}, tmp_path)
    assert "roofline ESTIMATES, not measurements" in section
    assert roofline.estimate_table(record, "exact") in section


def test_an_unknown_rung_is_a_one_line_error():
    done = subprocess.run([sys.executable, "-m", "bench", "roofline", "--only", "r9"], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "r9" in done.stderr
