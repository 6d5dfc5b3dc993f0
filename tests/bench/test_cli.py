"""The bench command line, run as a user runs it (a subprocess), on the reference at small sizes."""

import json
import subprocess
import sys

import pytest

from bench.cli import parse_options, parse_value

SMALL_MODEL = ["--n-prompts", "4", "--d-model", "8", "--n-cycles", "2", "--data", "synthetic:tiny"]


def bench(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def timed(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "ref.json"
    run = bench("--backend", "reference", *SMALL_MODEL, "--steps", "2", "--warmup", "1", "--repeats", "2",
                "--json", str(out), "--quiet")
    assert run.returncode == 0, run.stderr
    return json.loads(out.read_text()), out


def test_time_writes_the_documented_json(timed):
    result, _ = timed
    for key in ("backend", "device", "device_name", "dtype", "batch_size", "config", "versions", "git_commit",
                "samples_per_sec", "samples_per_sec_all", "step_time_ms", "compile_time_s", "peak_memory_mb",
                "equivalence"):
        assert key in result, key
    assert result["backend"] == "reference" and result["batch_size"] == 8
    assert result["config"] == {"n_columns": 984, "n_prompts": 4, "d_model": 8, "n_cycles": 2}
    assert len(result["samples_per_sec_all"]) == 2
    assert min(result["samples_per_sec_all"]) <= result["samples_per_sec"] <= max(result["samples_per_sec_all"])
    # 2 steps of 8 samples in each repeat: the rate and the step time describe the same measurement
    assert result["samples_per_sec"] == pytest.approx(8000 / result["step_time_ms"], rel=0.35)
    assert result["versions"]["torch"]
    assert result["equivalence"] is None


def test_compare_prints_ratios_and_refuses_different_configs(timed, tmp_path):
    result, path = timed
    faster = dict(result, backend="twice", samples_per_sec=2 * result["samples_per_sec"])
    other = dict(result, config={**result["config"], "d_model": 16})
    (tmp_path / "b.json").write_text(json.dumps(faster))
    (tmp_path / "c.json").write_text(json.dumps(other))
    run = bench("compare", str(path), str(tmp_path / "b.json"))
    assert run.returncode == 0, run.stderr
    row = next(line for line in run.stdout.splitlines() if line.startswith("| twice"))
    assert "| 2.0 |" in row and "| 2.00 |" in row
    refused = bench("compare", str(path), str(tmp_path / "c.json"))
    assert refused.returncode == 2 and "different configs" in refused.stderr
    assert bench("compare", str(path), str(tmp_path / "c.json"), "--force").returncode == 0


def test_train_prints_validation_mae_per_epoch(tmp_path):
    out = tmp_path / "train.json"
    run = bench("train", "--backend", "reference", *SMALL_MODEL, "--epochs", "2", "--max-steps", "3",
                "--json", str(out), "--quiet")
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stdout.splitlines() if line.startswith("Epoch")]
    assert len(lines) == 2 and "val MAE: " in lines[0]
    history = json.loads(out.read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2] and all(h["val_mae"] > 0 for h in history)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_check_passes_for_the_reference(dtype):
    run = bench("check", "--backend", "reference", "--dtype", dtype)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "verdict: pass" in run.stdout and "worst grad" in run.stdout


@pytest.mark.parametrize("args, message", [
    (["--backend", "nope"], "unknown backend 'nope'"),
    (["--backend", "reference", "--device", "tpu"], "unknown device 'tpu'"),
    (["--backend", "reference", "--data", "/no/such/dir"], "does not exist"),
    (["--backend", "reference", "--data", "synthetic:huge"], "unknown synthetic preset"),
    (["--backend", "reference", "--opt", "novalue"], "key=value"),
    (["--backend", "reference", "--opt", "turbo=1", *SMALL_MODEL], "takes no trainer options"),
    (["--backend", "reference", "--batch-size", "0"], "batch-size"),
    (["--backend", "reference", "--dtype", "float16"], "invalid choice"),
    (["--backend", "reference", "--no-such-flag"], "unrecognized arguments"),
    (["check"], "required"),
    (["compare", "/no/such.json"], "does not exist"),
    (["all", "--backends", "reference,nope"], "unknown backend"),
])
def test_bad_input_gives_one_line_and_exit_2(args, message):
    run = bench(*args, timeout=120)
    assert run.returncode == 2, (run.returncode, run.stderr)
    assert message in run.stderr
    assert run.stderr.strip().count("\n") == 0 and "Traceback" not in run.stderr


def test_option_values_are_typed():
    assert [parse_value(v) for v in ("true", "off", "none", "3", "2.5", "r5")] == [True, False, None, 3, 2.5, "r5"]
    assert parse_options(["variant=r5", "compile=true"], "ddp") == {"variant": "r5", "compile": True, "parallel": "ddp"}


def test_every_subcommand_has_help():
    for sub in ("time", "train", "check", "compare", "all"):
        run = bench(sub, "--help", timeout=60)
        assert run.returncode == 0 and "usage" in run.stdout
