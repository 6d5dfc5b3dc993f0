"""`python -m bench ladder` end to end at the smoke size: files written, rows consistent, the
hardware it lacks listed as skipped, deviations measured against the float64 reference."""

from __future__ import annotations

import argparse
import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from bench import ladder  # noqa: E402


@pytest.mark.slow
def test_smoke_ladder_writes_json_table_and_chart(tmp_path):
    parser = argparse.ArgumentParser()
    ladder.add_arguments(parser)
    args = parser.parse_args(["--smoke", "--data", "synthetic:tiny", "--seconds", "0.2", "--threads", "1",
                              "--only", "r3,r5,fused,amp,cuda_graphs", "--no-malloc-env",
                              "--out", str(tmp_path)])
    assert ladder.run(args) == 0
    record = json.loads((tmp_path / "ladder_torch_cpu.json").read_text())
    rows = {r["key"]: r for r in record["rows"]}
    assert list(rows) == ["reference", "r3", "r5", "fused", "amp", "cuda_graphs"]
    assert rows["cuda_graphs"]["skipped"] == "needs CUDA"
    assert rows["reference"]["x_reference"] == 1.0
    for key in ("r3", "r5", "fused", "amp"):
        row = rows[key]
        assert row["samples_per_sec"] > 0
        assert row["x_reference"] == pytest.approx(row["samples_per_sec"] / rows["reference"]["samples_per_sec"])
    # r5 builds on r4, which did not run: its ratio falls back to the nearest row that did (r3).
    assert rows["r5"]["x_previous"] == pytest.approx(rows["r5"]["samples_per_sec"] / rows["r3"]["samples_per_sec"])
    # Exact rows sit at float32 rounding; the AMP row is visibly further away and says so.
    assert rows["fused"]["deviation"]["max_rel"] < 1e-5
    assert rows["amp"]["deviation"]["max_rel"] > 1e-4 and rows["amp"]["equivalence"] == "AMP bf16"
    table = (tmp_path / "ladder_torch_cpu.md").read_text()
    assert "skipped: needs CUDA" in table and "| r5 |" in table
    assert (tmp_path / "ladder_torch_cpu.png").stat().st_size > 1000
