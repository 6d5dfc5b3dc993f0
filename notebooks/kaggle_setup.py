"""Kaggle setup: where trompt-bench comes from, where files go, and whether the JAX here can run it.

Both Kaggle notebooks carry this file verbatim in their cell tagged `kaggle-setup`: on Kaggle a
notebook is uploaded alone, so it cannot import a file of the repository before it has found the
repository. tests/notebooks/test_notebooks.py checks that the copies match this file, and tests
the functions here against fake /kaggle trees.

Kaggle's folders: /kaggle/input holds the attached datasets (read-only); /kaggle/working is the
notebook's saved output (20 GB at most, and everything written there is kept), so only results go
there; clones, copies and virtual environments go to a scratch folder (/kaggle/tmp).
With Internet off nothing can be downloaded, not even the build backend that pip's build isolation
fetches, so an attached source folder is installed with --no-build-isolation, which needs the
image's own setuptools to be new enough for pyproject's SPDX license string; with an older one
the source folder is put on PYTHONPATH instead of being installed.
"""

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

PROJECT_LINE = 'name = "trompt-bench"'
SETUPTOOLS_NEEDED = ">=77"  # pyproject's build-system: the SPDX `license = "MIT"` string
JAX_NEEDED = {"jax": ">=0.10,<0.11", "flax": ">=0.12", "optax": ">=0.2.8"}  # pyproject's jax extra
# Not worth copying from an attached source folder (a copy made on a developer's machine).
COPY_IGNORE = shutil.ignore_patterns(".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "runs", "build",
                                     "*.egg-info")


def find_checkout(start: Path) -> Path | None:
    """The trompt-bench source folder `start` is in (a clone, or an attached copy), if any."""
    for folder in [start, *start.parents]:
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and PROJECT_LINE in pyproject.read_text(errors="replace"):
            return folder
    return None


def scratch_dir(preferred: str | Path) -> Path:
    """`preferred`, created if its parent exists (/kaggle does on Kaggle, so a run elsewhere makes
    no /kaggle); else a folder in the system's temporary folder. Never the output folder."""
    fallback = Path(tempfile.gettempdir()) / "trompt-bench-scratch"
    for folder, parents in [(Path(preferred), False), (fallback, True)]:
        try:
            folder.mkdir(parents=parents, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    raise OSError(f"no writable scratch folder: {preferred}, nor one in {tempfile.gettempdir()}")


def version_tuple(text: str) -> tuple[int, ...]:
    """The leading release numbers: "0.4.38.dev20250101" -> (0, 4, 38), "2.8.0+cu126" -> (2, 8, 0)."""
    numbers = []
    for part in text.split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        numbers.append(int(digits.group()))
        if digits.group() != part:
            break
    return tuple(numbers)


def satisfies(version: str, specifier: str) -> bool:
    """Whether `version` meets every clause of `specifier` (">=0.10,<0.11"; release numbers only)."""
    have = version_tuple(version)
    for clause in specifier.split(","):
        match = re.fullmatch(r"\s*(>=|<=|==|<|>)\s*([0-9][0-9.]*)\s*", clause)
        if match is None:
            raise ValueError(f"unsupported version clause {clause!r} in {specifier!r}")
        op, bound = match.group(1), version_tuple(match.group(2))
        width = max(len(have), len(bound))
        a, b = have + (0,) * (width - len(have)), bound + (0,) * (width - len(bound))
        if not {">=": a >= b, "<=": a <= b, "==": a == b, "<": a < b, ">": a > b}[op]:
            return False
    return True


def package_versions(python: str, names: list[str]) -> dict[str, str | None]:
    """The installed versions of `names` in the interpreter `python` (None: not installed).

    Read from the package metadata in a child process, so nothing is imported here, and a JAX too
    old to import the backend still reports its version.
    """
    probe = ("import importlib.metadata as m, sys\n"
             "for name in sys.argv[1:]:\n"
             "    try:\n"
             "        print(name, m.version(name))\n"
             "    except m.PackageNotFoundError:\n"
             "        print(name, '-')\n")
    out = subprocess.run([python, "-c", probe, *names], capture_output=True, text=True, check=True).stdout
    found = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    return {name: None if found.get(name, "-") == "-" else found[name] for name in names}


@dataclasses.dataclass
class Setup:
    """How trompt-bench is made importable: copy, then run the commands, then extend PYTHONPATH."""

    how: str  # one line for the notebook's output
    root: Path  # where the bench commands run (the source folder, or scratch once it is installed)
    copy: tuple[Path, Path] | None = None  # (attached source folder, its writable copy)
    commands: list[list[str]] = dataclasses.field(default_factory=list)
    pythonpath: Path | None = None


def attached_sources(input_dir: Path) -> list[Path]:
    """trompt-bench source folders among the attached datasets (up to three folders deep)."""
    found = []
    for pattern in ["*/pyproject.toml", "*/*/pyproject.toml", "*/*/*/pyproject.toml"]:
        found += [p.parent for p in sorted(input_dir.glob(pattern)) if find_checkout(p.parent) == p.parent]
    return found


def plan_setup(cwd: Path, input_dir: Path, scratch: Path, repo_url: str, python: str,
               setuptools_version: str | None) -> Setup:
    """Where trompt-bench comes from, first match wins:

    1. `cwd` is in a clone (the test suite, or a clone made by hand): used as it is;
    2. a wheel attached as a dataset (input_dir/**/trompt_bench-*.whl): pip installs it, offline;
    3. the source folder attached as a dataset: copied to scratch (input is read-only, a build
       writes into its folder), then installed offline (--no-build-isolation) if the image's
       setuptools can build it, else put on PYTHONPATH;
    4. `repo_url` cloned into scratch (Internet on) and installed.
    --no-deps everywhere keeps the torch / jax / numpy of Kaggle's image.
    """
    pip = [python, "-m", "pip", "install", "-q", "--no-deps"]
    checkout = find_checkout(cwd)
    if checkout is not None:
        return Setup(f"the checkout at {checkout}", checkout)
    wheels = sorted(input_dir.glob("**/trompt_bench-*.whl"))
    if wheels:
        return Setup(f"the attached wheel {wheels[-1]}, installed", scratch,
                     commands=[[*pip, "--force-reinstall", str(wheels[-1])]])
    copy = scratch / "trompt-bench"
    sources = attached_sources(input_dir)
    if sources:
        if setuptools_version is not None and satisfies(setuptools_version, SETUPTOOLS_NEEDED):
            return Setup(f"the attached source {sources[0]}, copied to {copy} and installed offline",
                         copy, copy=(sources[0], copy),
                         commands=[[*pip, "--no-build-isolation", str(copy)]])
        return Setup(f"the attached source {sources[0]}, copied to {copy} and put on PYTHONPATH, not "
                     f"installed: building it needs setuptools{SETUPTOOLS_NEEDED}, this Python has "
                     f"{setuptools_version or 'none'}", copy, copy=(sources[0], copy), pythonpath=copy)
    if repo_url:
        clone = [] if find_checkout(copy) == copy else [["git", "clone", "--depth", "1", repo_url, str(copy)]]
        return Setup(f"{repo_url}, cloned to {copy} and installed", copy,
                     commands=[*clone, [*pip, str(copy)]])
    raise LookupError(f"trompt-bench not found: attach its wheel or source folder as a dataset (searched "
                      f"{input_dir}), or set REPO_URL and turn Internet on (see the first cell)")


def apply_setup(setup: Setup, run: Callable[..., object] = subprocess.run) -> Path:
    """Carry out `setup` (commands through `run`); returns the folder to run the bench commands in."""
    print("trompt-bench:", setup.how, flush=True)
    if setup.copy is not None:
        source, copy = setup.copy
        shutil.copytree(source, copy, ignore=COPY_IGNORE, dirs_exist_ok=True)
    for command in setup.commands:
        print("$", " ".join(command), flush=True)
        run(command, check=True)
    if setup.pythonpath is not None:  # for the child processes, which inherit os.environ
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(setup.pythonpath), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
    return setup.root


def jax_python(scratch: Path, pins: str, run: Callable[..., object] = subprocess.run) -> str:
    """The interpreter for the JAX runs: a virtual environment in scratch with `pins` installed,
    sharing the image's other packages (its torch / torch_xla / libtpu stay as they are); else,
    when that cannot be installed (Internet off), the image's own Python."""
    venv = scratch / "jax-env"
    python = venv / "bin" / "python"
    try:
        if not python.exists():
            run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
        run([str(python), "-m", "pip", "install", "-q", *pins.split()], check=True)
    except subprocess.CalledProcessError:
        print(f"could not install {pins} (Internet off?): trying the image's JAX")
        return sys.executable
    return str(python)


def jax_problem(versions: dict[str, str | None]) -> str | None:
    """One line saying why these JAX packages cannot run backends/jax, or None when they can."""
    wrong = [f"{name} {versions.get(name) or 'missing'} (needs {name}{needed})"
             for name, needed in JAX_NEEDED.items()
             if not versions.get(name) or not satisfies(versions[name], needed)]
    if not wrong:
        return None
    return (f"this JAX cannot run backends/jax: {', '.join(wrong)}; turn Settings > Internet on so "
            f"that JAX_PINS are installed")
