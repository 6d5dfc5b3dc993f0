"""`python -m bench ladder`: the rungs as records, one-line errors, and the smoke run end to end
(files named _smoke, every row timed by bench.timing and checked by bench check)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from backends import spec
from bench import ladder, report

ROOT = Path(__file__).resolve().parents[2]


def bench(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *argv], capture_output=True, text=True, cwd=ROOT,
                          timeout=900)


def test_rungs_are_records_each_building_on_an_earlier_one():
    keys = [r.key for r in ladder.RUNGS]
    assert all(isinstance(r, ladder.Rung) for r in ladder.RUNGS)
    assert len(set(keys)) == len(keys)
    assert ladder.RUNGS[0].key == "reference" and ladder.RUNGS[0].builds_on is None
    for i, rung in enumerate(ladder.RUNGS[1:], start=1):
        assert rung.builds_on in keys[:i], rung.key
        assert rung.needs in (None, "cuda", "cpu", "multi")


def test_rung_options_are_options_the_backend_declares():
    pytest.importorskip("torch")
    import backends

    torch_backend = backends.load("torch")
    for rung in ladder.RUNGS:
        if rung.backend == "torch":
            torch_backend.parse_options({k: v for k, v in rung.options.items() if k != "cuda_graphs"})


def test_missing_hardware_is_named():
    assert ladder.missing_hardware("cuda", "cpu", 0) == "needs CUDA"
    assert "--cpu-ranks" in ladder.missing_hardware("multi", "cpu", 1)
    assert ladder.missing_hardware("multi", "cpu", 2) is None
    assert ladder.missing_hardware(None, "cpu", 0) is None


@pytest.mark.parametrize("only", ["r5,warp", ","])
def test_a_bad_only_key_is_a_one_line_error(only):
    done = bench("ladder", "--only", only, "--no-malloc-env")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "unknown rung" in done.stderr, done.stderr
    assert done.stdout == ""


@pytest.mark.slow
def test_smoke_ladder_writes_smoke_files_with_a_measured_check_per_row(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    done = bench("ladder", "--smoke", "--only", "r5,compile", "--threads", "1", "--seconds", "0.3",
                 "--profile", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    stem = "ladder_torch_cpu_smoke"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{stem}.{ext}" for ext in ("json", "md", "png")]

    record = json.loads((tmp_path / f"{stem}.json").read_text())
    assert record["ladder"] == "torch" and record["smoke"] is True and record["device"] == "cpu"
    rows = {r["key"]: r for r in record["rows"]}
    assert list(rows) == ["reference", "r5", "compile"]
    for key, row in rows.items():
        # A timing record of bench.timing (the step formula, warm-up with the short batch, spread).
        assert row["samples_per_sec"] > 0 and row["warmup_other_shapes"] == [1029 % 8], key
        assert "unsteady" in row and row["peak_memory_mb"] > 0
        # The check ran on this row's own backend and options: every row exact here, so "pass".
        assert row["equivalence"]["verdict"] == "pass", (key, row["equivalence"])
        assert 0 < row["equivalence"]["worst"] < 1e-2
    assert rows["reference"]["backend"] == "reference" and rows["reference"]["x_reference"] == 1.0
    assert rows["compile"]["options"]["compile"] is True and rows["compile"]["options"]["threads"] == 1
    # compile builds on fused, which did not run: its ratio falls back to the nearest rung that did.
    assert rows["compile"]["x_previous_of"] == "r5"
    assert rows["compile"]["x_previous"] == pytest.approx(
        rows["compile"]["samples_per_sec"] / rows["r5"]["samples_per_sec"])

    # --profile: each rung's top ops from its trainer's op_times (torch.profiler); the compiled
    # rung's are inductor's kernels by name, its step recompiled with kernel profiling.
    profiles = record["profiles"]
    assert sorted(profiles) == ["compile", "r5", "reference"]
    for key, ops in profiles.items():
        assert 0 < len(ops) <= 8 and all(op["ms_per_step"] > 0 and 0 < op["share"] <= 1 for op in ops), key
    assert any("cpp_fused" in op["op"] for op in profiles["compile"])
    assert not any("cpp_fused" in op["op"] for op in profiles["r5"])

    table = (tmp_path / f"{stem}.md").read_text()
    assert table.splitlines()[0].startswith("Torch ladder, smoke (tiny model, plumbing only), on ")
    assert "| compile |" in table and "| pass (" in table
    assert (tmp_path / f"{stem}.png").stat().st_size > 1000
    # bench report lists it as a ladder, marked as a smoke run.
    _, ladders, _ = report.load_results(tmp_path)
    section = report.render_section({}, ladders, {}, tmp_path)
    assert f"`{stem}.json`: torch on " in section and "smoke size" in section


def test_the_cells_ranks_are_given_the_ladder_s_machine_peaks(monkeypatch):
    """The ranks' floors must use the run's peaks, not ones each rank measures with its share of
    the threads (those would make the row's % of the floor incomparable with the others)."""
    pytest.importorskip("torch")
    peaks = {"gemm_gflops_square": 123.0, "copy_gb_per_s": 4.5}
    seen = {}

    def fake_run(cmd, **kwargs):
        seen["peaks"] = json.loads(Path(cmd[cmd.index("--machine-peaks") + 1]).read_text())
        return subprocess.CompletedProcess(cmd, 1, "", "torchrun: no\n")

    monkeypatch.setattr(ladder.subprocess, "run", fake_run)
    args = argparse.Namespace(device="cpu", cpu_ranks=2)
    row = ladder.time_cells({"threads": 2}, args, spec.TromptConfig(), "synthetic:small", 1.0, "run", peaks)
    assert seen["peaks"] == peaks
    assert row["skipped"] == "torchrun failed: torchrun: no"
