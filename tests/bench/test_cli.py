"""The bench command line, run as a user runs it (a subprocess), on the reference at small sizes."""

import json
import subprocess
import sys

import pytest

from bench.cli import parse_options

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
    floors = result["floors"]  # measured in the same process: the machine's peaks and this run's share
    peaks = floors["machine_peaks"]
    assert peaks["gemm_gflops_square"] > 0 and peaks["copy_gb_per_s"] > 0
    # On the CPU both of torch's GEMM libraries are measured, and the floor takes the faster.
    assert peaks["gemm_gflops_square_onednn"] > 0 and peaks["gemm_gflops_model_onednn"] > 0
    best = max(peaks[k] for k in ("gemm_gflops_square", "gemm_gflops_model", "gemm_gflops_square_onednn",
                                  "gemm_gflops_model_onednn"))
    assert floors["compute_floor_sps"] == pytest.approx(best * 1e9 / floors["gemm_flops_per_sample"])
    assert floors["percent_of_compute_floor"] == pytest.approx(100 * result["samples_per_sec"]
                                                               / floors["compute_floor_sps"])


def test_cores_pins_the_run_and_sizes_its_thread_pools(tmp_path):
    out = tmp_path / "one-core.json"
    run = bench("--backend", "torch", *SMALL_MODEL, "--steps", "2", "--warmup", "1", "--repeats", "1",
                "--no-floors", "--cores", "1", "--json", str(out), "--quiet")
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert result["cores"] == 1 and result["cores_machine"] >= 1
    assert result["environment"]["OMP_NUM_THREADS"] == "1"
    probe = subprocess.run([sys.executable, "-c", "from bench.sysinfo import pin_to_cores; import os, torch;"
                            "pin_to_cores(1)"], capture_output=True, text=True, timeout=120)
    assert probe.returncode != 0 and "before torch is imported" in probe.stderr


def test_compare_prints_ratios_and_refuses_different_configs(timed, tmp_path):
    result, path = timed
    faster = dict(result, backend="twice", samples_per_sec=2 * result["samples_per_sec"])
    other = dict(result, config={**result["config"], "d_model": 16})
    (tmp_path / "b.json").write_text(json.dumps(faster))
    (tmp_path / "c.json").write_text(json.dumps(other))
    run = bench("compare", str(path), str(tmp_path / "b.json"))
    assert run.returncode == 0, run.stderr
    row = next(line for line in run.stdout.splitlines() if line.startswith("| twice"))
    assert "| 2.00 |" in row and "| 2.0 |" not in row  # one ratio, against the reference, one rounding
    assert "× reference float32" in run.stdout
    (tmp_path / "notes.json").write_text(json.dumps({"ladder": "torch", "rows": []}))
    mixed = bench("compare", str(tmp_path / "notes.json"), str(path), str(tmp_path / "b.json"),
                  "--baseline", "twice")
    assert mixed.returncode == 0 and "note: skipped" in mixed.stderr and "notes.json" in mixed.stderr
    assert "× twice float32" in mixed.stdout
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
    assert "verdict: pass" in run.stdout and "gradients (worst: " in run.stdout


def test_time_check_labels_amp_not_exact(tmp_path):
    out = tmp_path / "amp.json"
    run = bench("--backend", "torch", *SMALL_MODEL, "--steps", "1", "--warmup", "1", "--repeats", "1",
                "--opt", "amp=bf16", "--check", "--json", str(out), "--quiet")
    assert run.returncode == 0, run.stderr
    assert "check: not exact: amp=bf16, deviation" in run.stdout
    assert json.loads(out.read_text())["equivalence"]["verdict"].startswith("not exact: amp=bf16")


@pytest.mark.parametrize("args, message", [
    (["--backend", "nope"], "unknown backend 'nope'"),
    (["--backend", "reference", "--device", "tpu"], "unknown device 'tpu'"),
    (["--backend", "reference", "--data", "/no/such/dir"], "does not exist"),
    (["--backend", "reference", "--data", "synthetic:huge"], "unknown synthetic preset"),
    (["--backend", "reference", "--opt", "novalue"], "key=value"),
    (["--backend", "reference", "--opt", "turbo=1", *SMALL_MODEL], "unknown option(s) turbo"),
    (["--backend", "torch", "--opt", "compile=maybe"], "compile must be true or false"),
    (["--backend", "torch", "--opt", "variant=r9"], "variant='r9' is not one of"),
    (["--backend", "torch", "--opt", "threads=0"], "threads must be >= 1"),
    (["--backend", "reference", "--parallel", "warp"], "parallel='warp' is not one of"),
    (["--backend", "reference", "--batch-size", "0"], "--batch-size: must be >= 1"),
    (["--backend", "reference", "--steps", "-1"], "--steps: must be >= 1"),
    (["--backend", "reference", "--steps", "0"], "--steps: must be >= 1"),
    (["--backend", "reference", "--seconds", "-1"], "--seconds: must be >= 0"),
    (["--backend", "reference", "--seconds", "0"], "--seconds: must be > 0"),
    (["--backend", "reference", "--seconds", "nan"], "--seconds"),
    (["--backend", "reference", "--seconds", "inf"], "--seconds"),
    (["--backend", "reference", "--repeats", "0"], "--repeats: must be >= 1"),
    (["--backend", "reference", "--warmup", "0"], "--warmup: must be >= 1"),
    (["--backend", "reference", "--n-cycles", "0"], "--n-cycles: must be >= 1"),
    (["--backend", "reference", "--seed", "-3"], "--seed: must be >= 0"),
    (["--backend", "reference", "--cores", "0"], "--cores: must be >= 1"),
    (["--backend", "reference", "--cores", "4096", *SMALL_MODEL], "--cores 4096: this process may use only"),
    (["--backend", "reference", "--steps", "two"], "expected an integer"),
    (["train", "--backend", "reference", "--epochs", "0"], "--epochs: must be >= 1"),
    (["train", "--backend", "reference", "--checkpoint-every", "-1"], "--checkpoint-every: must be >= 0"),
    (["check", "--backend", "reference", "--steps", "2"], "must be >= 3"),
    (["trian", "--backend", "reference"], "did you mean 'train'?"),
    (["--backend", "torch", "time"], "the command goes first: bench time --backend torch"),
    (["options", "--backend", "nope"], "unknown backend 'nope'"),
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


def test_options_arrive_as_text_and_the_backend_types_them():
    assert parse_options(["variant=r5", "compile=true"], "ddp") == {"variant": "r5", "compile": "true",
                                                                    "parallel": "ddp"}
    import backends
    parsed = backends.load("torch").parse_options({"compile": "true", "threads": "2", "amp": "none"})
    assert parsed["compile"] is True and parsed["threads"] == 2 and parsed["amp"] is None


def test_every_command_has_a_description_and_shows_its_defaults():
    from bench.cli import COMMANDS

    for sub in COMMANDS:
        run = bench(sub, "--help", timeout=60)
        assert run.returncode == 0 and "usage" in run.stdout, sub
        assert COMMANDS[sub][1].split(" (")[0] in " ".join(run.stdout.split()), sub
    assert "(default: 20.0)" in bench("time", "--help").stdout  # --seconds


def test_discovery_without_arguments_version_and_list():
    alone = bench(timeout=60)
    assert alone.returncode == 0 and "COMMAND" in alone.stdout and "train" in alone.stdout
    version = bench("--version", timeout=60)
    assert version.returncode == 0 and "trompt-bench" in version.stdout
    listed = bench("list", timeout=60)
    assert listed.returncode == 0
    names = [line.split()[0] for line in listed.stdout.splitlines() if not line.startswith(" ")]
    assert names == ["reference", "jax", "mlx", "tinygrad", "torch"]
    assert "torch 2." in listed.stdout and "devices here: cpu" in listed.stdout
    assert "cuda: device 'cuda' requested but torch sees no CUDA GPU" in listed.stdout  # this CPU machine


def test_an_existing_json_is_not_replaced_without_force(timed):
    _, path = timed
    before = path.read_text()
    run = bench("--backend", "reference", *SMALL_MODEL, "--steps", "1", "--warmup", "1", "--repeats", "1",
                "--json", str(path), "--quiet")
    assert run.returncode == 2 and "pass --force" in run.stderr
    assert path.read_text() == before


def test_two_runs_with_one_json_path_never_lose_a_result_silently(tmp_path):
    out = tmp_path / "same.json"
    args = [sys.executable, "-m", "bench", "--backend", "reference", *SMALL_MODEL, "--steps", "2", "--warmup", "1",
            "--repeats", "1", "--json", str(out), "--quiet", "--no-floors"]
    runs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    done = [(p.wait(timeout=600), p.stderr.read()) for p in runs]
    assert sorted(code for code, _ in done) == [0, 2], done  # one saved, the other refused, never both
    refused = next(err for code, err in done if code == 2)
    errors = [line for line in refused.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in refused  # warnings (contention) may precede it
    assert "was written by another run while this one ran" in refused or "exists; pass --force" in refused
    assert json.loads(out.read_text())["backend"] == "reference"
