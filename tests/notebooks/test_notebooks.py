"""The Kaggle notebooks, executed for real on the CPU with SMOKE=True (papermill), and committed clean.

The kernel is this interpreter (the project's .venv), through a kernelspec written into a
temporary JUPYTER_PATH: nothing depends on which kernels the machine has installed.
Every run trains the same tiny model from the same initial parameters on the same batches, so
each mode's final training loss must equal the float64 reference's (computed here separately), and
every timing carries its passing equivalence check (`--check`). The output folder must hold the
results and nothing else (on Kaggle it is the saved output); scratch goes to a folder of its own.
tests/notebooks/test_kaggle_setup.py tests the setup cell against fake /kaggle trees.
"""

import functools
import json
import math
import sys
from pathlib import Path

import nbformat
import pytest

from bench.results import read_result

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "trompt-bench-test"
SMOKE_CONFIG = {"n_columns": 984, "n_prompts": 8, "d_model": 16, "n_cycles": 2}  # the notebooks' SMOKE size
SMOKE_STEPS = 2  # 1 warm-up step + 1 timed step


@pytest.mark.parametrize("name", ["kaggle_gpu", "kaggle_tpu"])
def test_notebook_is_committed_clean_with_a_parameters_cell(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), "strip the outputs"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "SMOKE = False" in tagged[0].source
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """A kernelspec for this interpreter, found first because JUPYTER_PATH is searched first."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec_dir / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


OUTPUT = {"results", "REPORT.md", "img"}  # all that a notebook may write to OUT_DIR


def execute(name: str, kernel: str, out_dir: Path, **parameters) -> nbformat.NotebookNode:
    papermill = pytest.importorskip("papermill")
    side = out_dir.parent / f"{out_dir.name}-side"  # the executed notebook, scratch, an empty input
    side.mkdir(parents=True)
    executed = side / f"{name}.out.ipynb"
    parameters = {"SMOKE": True, "OUT_DIR": str(out_dir), "SCRATCH_DIR": str(side / "scratch"),
                  "INPUT_DIR": str(side / "input"), **parameters}
    papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(executed), kernel_name=kernel,
                               parameters=parameters, cwd=str(NOTEBOOKS), progress_bar=False)
    assert {p.name for p in out_dir.iterdir()} == OUTPUT
    return nbformat.read(executed, as_version=4)


def printed(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@functools.cache  # both notebook tests run in one worker (same xdist group): compute it once
def reference_final_loss() -> float:
    """The loss of the last SMOKE training step of the protocol at the SMOKE size, float64 reference."""
    import backends
    from backends import data, spec

    cfg = spec.TromptConfig(**SMOKE_CONFIG)
    dataset = data.load_dataset("synthetic:tiny", seed=spec.SEED)
    rows = data.epoch_batches(len(dataset.x_train), spec.BATCH_SIZE, 0, spec.SEED)[:SMOKE_STEPS]
    batches = [(dataset.x_train[r], dataset.y_train[r]) for r in rows]
    oracle = backends.load("reference", device="cpu", dtype="float64")
    _, losses = oracle.train_steps(spec.init_params(cfg, spec.SEED, "float64"), batches, cfg)
    return losses[-1]


def check_runs(results: Path, expected: dict[str, str], oracle_loss: float) -> None:
    """Each expected file is a valid cpu result of the SMOKE size, with the parallel mode asked for,
    that trained the same model as the reference, and passed its equivalence check."""
    for stem, mode in expected.items():
        r = read_result(results / f"{stem}.json")
        assert r["device"] in ("cpu", "xla") and r["config"] == SMOKE_CONFIG and r["data"] == "synthetic:tiny"
        assert r["options"].get("parallel") == mode
        assert r["warmup_steps"] + r["steps_per_repeat"] * r["repeats"] == SMOKE_STEPS
        assert math.isclose(r["final_loss"], oracle_loss, rel_tol=1e-4), (stem, r["final_loss"], oracle_loss)
        assert r["equivalence"]["verdict"] == "pass", (stem, r["equivalence"])


def check_report(out_dir: Path, expected_files: list[str], machines: list[str]) -> None:
    text = (out_dir / "REPORT.md").read_text()
    section = text[text.index("<!-- results:begin -->"):text.index("<!-- results:end -->")]
    for name in expected_files:
        assert f"`{name}`" in section
    for machine in machines:
        assert f"\n### {machine}\n" in section
    assert list((out_dir / "img").glob("results_*.png"))


@pytest.mark.slow
@pytest.mark.xdist_group("notebooks")
def test_gpu_notebook_runs_at_smoke_size(tmp_path, kernel):
    out = tmp_path / "gpu"
    nb = execute("kaggle_gpu", kernel, out)
    results = out / "results"
    expected = {"reference-cpu-float32": "none", "torch-cpu-float32": "none", "torch-cpu-ddp2": "ddp",
                "torch-cpu-cells2": "cells"}
    check_runs(results, expected, reference_final_loss())
    ladder = json.loads((results / "ladder_torch_cpu_smoke.json").read_text())
    assert [row["key"] for row in ladder["rows"]] == ["reference", "r5"] and ladder["smoke"]
    assert all(row["equivalence"]["verdict"] == "pass" for row in ladder["rows"])
    assert "| torch float32 (parallel=ddp) | cpu |" in printed(nb)  # the compare table
    check_report(out, [f"{stem}.json" for stem in expected] + ["ladder_torch_cpu_smoke.json"],
                 [read_result(results / "torch-cpu-float32.json")["device_name"]])


@pytest.mark.slow
@pytest.mark.xdist_group("notebooks")
def test_tpu_notebook_runs_at_smoke_size_beside_gpu_results(tmp_path, kernel):
    gpu = tmp_path / "gpu-output" / "results"  # what an attached output of the GPU notebook holds
    gpu.mkdir(parents=True)
    t4 = {"backend": "torch", "device": "cuda", "device_name": "Tesla T4", "dtype": "float32", "batch_size": 8,
          "options": {"parallel": "ddp"}, "config": SMOKE_CONFIG, "data": "synthetic:tiny",
          "samples_per_sec": 1000.0}
    (gpu / "torch-cuda-ddp2.json").write_text(json.dumps(t4))
    (gpu / "notes.json").write_text(json.dumps({"not": "a result"}))
    repo_copy = tmp_path / "gpu-output" / "trompt-bench"  # an attached copy of the repository: ignored
    (repo_copy / "results").mkdir(parents=True)
    (repo_copy / "pyproject.toml").write_text('[project]\nname = "trompt-bench"\n')
    (repo_copy / "results" / "torch-cpu-float32.json").write_text(json.dumps({**t4, "device_name": "a CPU"}))
    out = tmp_path / "tpu"
    nb = execute("kaggle_tpu", kernel, out, GPU_RESULTS=str(tmp_path / "gpu-output"))
    results = out / "results"
    expected = {"jax-cpu-float32": "none", "jax-cpu-pmap": "pmap", "jax-cpu-sharding": "sharding"}
    has_xla = (results / "torch-xla-float32.json").exists()
    if has_xla:
        expected["torch-xla-float32"] = "none"
    else:
        assert "skipped torch_xla: it is not installed" in printed(nb)
    check_runs(results, expected, reference_final_loss())
    assert sorted(p.name for p in results.glob("gpu-*")) == ["gpu-torch-cuda-ddp2.json"]
    machine = read_result(results / "jax-cpu-float32.json")["device_name"]
    check_report(out, [f"{stem}.json" for stem in expected] + ["gpu-torch-cuda-ddp2.json"],
                 [machine, "Tesla T4"])
    assert (out / "img" / "results_overview.png").exists()  # both machines side by side
