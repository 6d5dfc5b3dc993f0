"""notebooks/kaggle_setup.py, the Kaggle notebooks' setup cell, against fake /kaggle trees.

Each test builds /kaggle/input (the attached datasets), /kaggle/working (the saved output) and
/kaggle/tmp (scratch) under tmp_path and runs the notebooks' setup from inside working, as Kaggle
does. pip and git are not run (a recorder stands in for subprocess.run), except to build the
attached source offline once, into a folder under tmp_path.
"""

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
SETUP_FILE = ROOT / "notebooks" / "kaggle_setup.py"
NOTEBOOKS = ["kaggle_gpu", "kaggle_tpu"]
OLD_JAX = {"jax": "0.4.38", "flax": "0.10.4", "optax": "0.2.4"}  # an older Kaggle TPU image's


@pytest.fixture(scope="module")
def ks():
    spec = importlib.util.spec_from_file_location("kaggle_setup", SETUP_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses looks its module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


class Kaggle:
    """A fake /kaggle: input (read-only datasets), working (the output), tmp (scratch)."""

    def __init__(self, base: Path):
        self.input, self.working, self.tmp = base / "input", base / "working", base / "tmp"
        for folder in (self.input, self.working):
            folder.mkdir(parents=True)
        self.commands: list[list[str]] = []

    def run(self, command: list[str], check: bool) -> subprocess.CompletedProcess:
        assert check
        self.commands.append(command)
        return subprocess.CompletedProcess(command, 0)

    def working_files(self) -> list[Path]:
        return sorted(self.working.rglob("*"))


@pytest.fixture
def kaggle(tmp_path, monkeypatch):
    k = Kaggle(tmp_path / "kaggle")
    monkeypatch.chdir(k.working)  # a Kaggle notebook's working directory
    return k


def attach_source(kaggle: Kaggle, dataset: str = "trompt-bench-src") -> Path:
    """A copy of the repository as an attached dataset: the real pyproject.toml and a stub package."""
    source = kaggle.input / dataset / "trompt-bench"  # an uploaded folder sits one level down
    (source / "bench").mkdir(parents=True)
    (source / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (source / "README.md").write_text("trompt-bench\n")
    (source / "bench" / "__init__.py").write_text("ATTACHED = True\n")
    (source / ".venv").mkdir()  # a developer's environment, left out of the copy
    return source


def plan(ks, kaggle: Kaggle, setuptools: str | None, repo_url: str = ""):
    return ks.plan_setup(Path.cwd(), kaggle.input, ks.scratch_dir(kaggle.tmp), repo_url, sys.executable,
                         setuptools)


# --- the notebooks carry this very file -----------------------------------------------------------


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_setup_cell_is_kaggle_setup_py(name):
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    cells = [c for c in nb.cells if "kaggle-setup" in c.metadata.get("tags", [])]
    assert len(cells) == 1 and cells[0].cell_type == "code"
    assert cells[0].source == SETUP_FILE.read_text().rstrip("\n"), \
        "copy notebooks/kaggle_setup.py into the cell tagged kaggle-setup: .venv/bin/python tests/notebooks/test_kaggle_setup.py"


def test_the_needs_are_pyprojects_and_the_pins_meet_them(ks):
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["build-system"]["requires"] == [f"setuptools{ks.SETUPTOOLS_NEEDED}"]
    extra = pyproject["project"]["optional-dependencies"]["jax"]
    assert extra == [f"{name}{needed}" for name, needed in ks.JAX_NEEDED.items()]
    nb = nbformat.read(ROOT / "notebooks" / "kaggle_tpu.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    namespace: dict = {}
    exec(params.source, namespace)
    pins = dict(pin.replace("[tpu]", "").split("==") for pin in namespace["JAX_PINS"].split())
    assert ks.jax_problem(pins) is None
    lock = dict(line.split("==") for line in (ROOT / "requirements" / "lock.txt").read_text().split()
                if "==" in line)
    assert {name: lock[name] for name in pins} == pins, "JAX_PINS should be the versions of the lock"


# --- where trompt-bench comes from ----------------------------------------------------------------


def test_attached_source_is_installed_offline_without_build_isolation(ks, kaggle, tmp_path):
    source = attach_source(kaggle)
    setup = plan(ks, kaggle, "80.9.0")
    copy = kaggle.tmp / "trompt-bench"
    assert setup.copy == (source, copy) and setup.root == copy and setup.pythonpath is None
    assert setup.commands == [[sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                               "--no-build-isolation", str(copy)]]
    assert ks.apply_setup(setup, run=kaggle.run) == copy
    assert kaggle.commands == setup.commands
    assert (copy / "bench" / "__init__.py").exists() and not (copy / ".venv").exists()
    assert kaggle.working_files() == []
    # The very command, with this environment's setuptools and no index at all: it builds.
    target = tmp_path / "site"
    subprocess.run([*setup.commands[0], "--no-index", "--target", str(target)], check=True, cwd=copy)
    assert (target / "bench" / "__init__.py").read_text() == "ATTACHED = True\n"


@pytest.mark.parametrize("setuptools", ["75.2.0", None])
def test_attached_source_goes_on_pythonpath_when_setuptools_cannot_build_it(ks, kaggle, monkeypatch,
                                                                            setuptools):
    attach_source(kaggle)
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    setup = plan(ks, kaggle, setuptools)
    copy = kaggle.tmp / "trompt-bench"
    assert setup.commands == [] and setup.pythonpath == copy
    assert f"needs setuptools>=77, this Python has {setuptools or 'none'}" in setup.how
    assert ks.apply_setup(setup, run=kaggle.run) == copy
    assert os.environ["PYTHONPATH"] == os.pathsep.join([str(copy), "/elsewhere"])
    # A child process, as every bench command is, imports the copy.
    out = subprocess.run([sys.executable, "-c", "import bench; print(bench.__file__, bench.ATTACHED)"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(copy / "bench" / "__init__.py"), "True"]
    assert kaggle.working_files() == []


def test_an_attached_wheel_comes_first_and_installs_without_building(ks, kaggle):
    attach_source(kaggle)
    wheel = kaggle.input / "trompt-wheel" / "dist" / "trompt_bench-0.1.0-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"")
    setup = plan(ks, kaggle, "80.9.0")
    assert setup.copy is None and setup.root == kaggle.tmp
    assert setup.commands == [[sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
                               str(wheel)]]
    ks.apply_setup(setup, run=kaggle.run)
    assert kaggle.working_files() == []


def test_repo_url_is_cloned_into_scratch(ks, kaggle):
    setup = plan(ks, kaggle, "75.2.0", repo_url="https://example.org/trompt-bench.git")
    copy = kaggle.tmp / "trompt-bench"
    assert setup.root == copy
    assert setup.commands == [["git", "clone", "--depth", "1", "https://example.org/trompt-bench.git", str(copy)],
                              [sys.executable, "-m", "pip", "install", "-q", "--no-deps", str(copy)]]
    ks.apply_setup(setup, run=kaggle.run)
    assert kaggle.working_files() == []


def test_a_checkout_is_used_as_it_is(ks, kaggle, monkeypatch):
    source = attach_source(kaggle)
    monkeypatch.chdir(source / "bench")
    setup = plan(ks, kaggle, None)
    assert (setup.root, setup.commands, setup.copy, setup.pythonpath) == (source, [], None, None)


def test_nothing_attached_says_what_to_do(ks, kaggle):
    (kaggle.input / "other-data" / "pyproject.toml").parent.mkdir()
    (kaggle.input / "other-data" / "pyproject.toml").write_text('[project]\nname = "other"\n')
    with pytest.raises(LookupError, match="attach its wheel or source folder as a dataset .* set REPO_URL"):
        plan(ks, kaggle, "80.9.0")


def test_scratch_falls_back_to_the_system_temp_folder_off_kaggle(ks, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "system-tmp"))
    (tmp_path / "system-tmp").mkdir()
    (tmp_path / "kaggle").mkdir()
    (tmp_path / "a-file").write_text("")
    assert ks.scratch_dir(tmp_path / "kaggle" / "tmp") == tmp_path / "kaggle" / "tmp"
    fallback = tmp_path / "system-tmp" / "trompt-bench-scratch"
    assert ks.scratch_dir(tmp_path / "a-file" / "tmp") == fallback
    assert ks.scratch_dir(tmp_path / "no-kaggle" / "tmp") == fallback and not (tmp_path / "no-kaggle").exists()


# --- the JAX the TPU notebook runs ------------------------------------------------------------------


def test_the_jax_environment_is_made_in_scratch(ks, kaggle):
    pins = "jax[tpu]==0.10.2 flax==0.12.8 optax==0.2.8"
    python = ks.jax_python(kaggle.tmp, pins, run=kaggle.run)
    venv = kaggle.tmp / "jax-env"
    assert python == str(venv / "bin" / "python")
    assert kaggle.commands == [[sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                               [python, "-m", "pip", "install", "-q", *pins.split()]]
    assert kaggle.working_files() == []


def test_without_internet_the_jax_environment_falls_back_to_the_images_python(ks, kaggle, capsys):
    def offline(command, check):
        if "pip" in command:
            raise subprocess.CalledProcessError(1, command)

    assert ks.jax_python(kaggle.tmp, "jax==0.10.2", run=offline) == sys.executable
    assert "could not install jax==0.10.2 (Internet off?)" in capsys.readouterr().out


def test_an_old_jax_is_refused_in_one_line_naming_the_versions(ks):
    line = ks.jax_problem(OLD_JAX)
    assert line is not None and "\n" not in line
    for name, version in OLD_JAX.items():
        assert f"{name} {version} (needs {name}{ks.JAX_NEEDED[name]})" in line
    assert "Internet on" in line
    assert "jax 0.11.0 (needs jax>=0.10,<0.11)" in ks.jax_problem({**OLD_JAX, "jax": "0.11.0"})
    assert "flax missing" in ks.jax_problem({"jax": "0.10.2", "flax": None, "optax": "0.2.8"})
    assert ks.jax_problem({"jax": "0.10.2", "flax": "0.12.8", "optax": "0.2.8"}) is None


def test_this_environments_jax_versions_are_read_without_importing_it(ks):
    names = [*ks.JAX_NEEDED, "setuptools", "no-such-package-here"]
    versions = ks.package_versions(sys.executable, names)
    assert versions["no-such-package-here"] is None
    assert versions["jax"] == importlib.metadata.version("jax")
    assert ks.satisfies(versions["setuptools"], ks.SETUPTOOLS_NEEDED)
    assert ks.jax_problem(versions) is None


@pytest.mark.parametrize("version, specifier, expected", [
    ("0.10.2", ">=0.10,<0.11", True), ("0.10", ">=0.10,<0.11", True), ("0.11.0", ">=0.10,<0.11", False),
    ("0.4.38", ">=0.10,<0.11", False), ("0.10.0rc1", ">=0.10", True), ("0.4.38.dev20250101", "<0.5", True),
    ("77.0.3", ">=77", True), ("75.2.0", ">=77", False), ("2.8.0+cu126", "==2.8", True),
])
def test_satisfies(ks, version, specifier, expected):
    assert ks.satisfies(version, specifier) is expected


def sync_setup_cells() -> None:
    """Write notebooks/kaggle_setup.py into each notebook's cell tagged kaggle-setup."""
    text = SETUP_FILE.read_text().rstrip("\n")
    for name in NOTEBOOKS:
        path = ROOT / "notebooks" / f"{name}.ipynb"
        nb = json.loads(path.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            if "kaggle-setup" in cell["metadata"].get("tags", []):
                cell["source"] = text.splitlines(keepends=True)
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sync_setup_cells()
