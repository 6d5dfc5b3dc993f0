"""The training entry points and the ``bench minitorch`` plugin, on tiny settings."""

from __future__ import annotations

import argparse
import json
import re

import pytest

from bench import minitorch_bench
from minitorch import train

pytestmark = pytest.mark.xdist_group("minitorch_numba")


def bench_args(tmp_path, **overrides) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    minitorch_bench.add_arguments(parser)
    args = parser.parse_args(["--matmul-sizes", "8", "--chain-sizes", "6", "--simple-max", "8",
                              "--repeats", "2", "--json", str(tmp_path / "out" / "mt.json")])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def test_bench_writes_ratios_as_json(tmp_path, capsys) -> None:
    assert minitorch_bench.run(bench_args(tmp_path)) == 0
    record = json.loads((tmp_path / "out" / "mt.json").read_text())
    assert [(r["op"], r["size"]) for r in record["results"]] == [("matmul", 8), ("chain", 6)]
    for row in record["results"]:
        assert row["fast_s"] > 0 and row["numpy_s"] > 0 and row["simple_s"] > 0
        assert row["fast_vs_simple"] == pytest.approx(row["simple_s"] / row["fast_s"])
        assert row["fast_vs_numpy"] == pytest.approx(row["numpy_s"] / row["fast_s"])
    assert not [p for p in (tmp_path / "out").iterdir() if p.name != "mt.json"]  # no temp files left
    assert "% of numpy" in capsys.readouterr().out


def test_bench_rejects_bad_sizes(tmp_path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        minitorch_bench.run(bench_args(tmp_path, matmul_sizes=[0]))


def test_train_rejects_bad_arguments(capsys) -> None:
    for argv in (["scalar", "--epochs", "0"], ["tensor", "--dataset", "moons"], ["digits", "--lr", "-1"]):
        with pytest.raises(SystemExit) as info:
            train.main(argv)
        assert info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_tensor_training_lowers_the_loss(capsys) -> None:
    assert train.main(["tensor", "--dataset", "simple", "--epochs", "20", "--log-every", "1",
                       "--backend", "simple", "--pts", "30"]) == 0
    losses = [float(x) for x in re.findall(r"loss (\d+\.\d+)", capsys.readouterr().out)]
    assert len(losses) == 20 and losses[-1] < losses[0]
