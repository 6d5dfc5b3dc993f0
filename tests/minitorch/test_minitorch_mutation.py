"""Mutation tests of the gradient checks: break one backward at a time, the checks must notice.

Each test copies the ``minitorch`` package into a temporary folder, rewrites (through the AST) the
``backward`` of one function in the copy, and runs ``backward_checks.check_all_backwards`` on
the copy in a fresh interpreter, so the real package is never touched. The mutants:

* ``zero``: every gradient the backward returns is replaced by zeros of the same shape (0.0 for
  a scalar function), for every function whose derivative is not identically zero;
* ``scale``: every gradient is multiplied by 1.001, an error the tolerance of 1e-2 of
  ``derivative_check``/``grad_check`` lets through;
* ``leak``: for lt and eq (zero derivative, so zeroing changes nothing), the backward passes the
  incoming gradient through to both inputs instead.

Each mutant must make the checks fail, and only the checks of the mutated function (and of the
composite graph, which chains many functions) may fail: the failures point at the culprit.
A control run applies a rewrite that changes nothing to every function and must pass.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .backward_checks import COMPOSITE, SCALAR_CASES, TENSOR_CASES

PACKAGE = Path(__file__).resolve().parents[2] / "minitorch"
# About 0.4 s of CPU per mutant (copy, fresh interpreter, all checks): ~20 s for the module.
pytestmark = pytest.mark.slow

CHECKS = Path(__file__).resolve().with_name("backward_checks.py")
SOURCES = {"scalar": "scalar_functions.py", "tensor": "tensor_functions.py"}

# How each gradient ``g`` returned by the original backward is replaced (``d_output`` is the
# gradient that came in).
TRANSFORMS = {
    "identity": "g",
    "zero": "g.zeros(g.shape) if hasattr(g, 'zeros') else 0.0",
    "scale": "g * 1.001",
    "leak": "d_output",
}

MUTANT_BACKWARD = """
@staticmethod
def backward(ctx, d_output):
    grads = {cls}._unmutated_backward(ctx, d_output)
    many = isinstance(grads, tuple)
    grads = tuple(({transform}) for g in (grads if many else (grads,)))
    return grads if many else grads[0]
"""

# Run in a fresh interpreter whose only minitorch is the copy: argv = copy's parent folder,
# path of backward_checks.py. Prints where minitorch came from and the failures, as JSON.
RUNNER = """
import importlib.util, json, sys
import minitorch
spec = importlib.util.spec_from_file_location("backward_checks_under_test", sys.argv[2])
checks = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = checks
spec.loader.exec_module(checks)
print(json.dumps({"file": minitorch.__file__, "failures": checks.check_all_backwards(minitorch)}))
"""


def classes_with_backward(source: str) -> list[str]:
    """The classes of a module's source that define a ``backward`` method, in order."""
    return [
        node.name
        for node in ast.parse(source).body
        if isinstance(node, ast.ClassDef)
        and any(isinstance(f, ast.FunctionDef) and f.name == "backward" for f in node.body)
    ]


def mutate(source: str, classes: list[str], kind: str) -> str:
    """``source`` with the ``backward`` of each class in ``classes`` wrapped by TRANSFORMS[kind]."""
    tree = ast.parse(source)
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in classes):
        original = next(f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "backward")
        original.name = "_unmutated_backward"
        cls.body += ast.parse(MUTANT_BACKWARD.format(cls=cls.name, transform=TRANSFORMS[kind])).body
    return ast.unparse(tree)


def _mutations() -> list[tuple[str, str, str]]:
    """(kind, side, function) for every function with a backward in the real package."""
    out = []
    for side, filename in SOURCES.items():
        for name in classes_with_backward((PACKAGE / filename).read_text()):
            case = SCALAR_CASES.get(name) if side == "scalar" else TENSOR_CASES.get(name, [None])[0]
            zero_derivative = case is not None and case.zero_derivative
            kinds = ["leak"] if zero_derivative else ["zero", "scale"]
            out += [(kind, side, name) for kind in kinds]
    return out


MUTATIONS = _mutations()


def run_checks_on_copy(tmp_path: Path, edits: dict[str, tuple[list[str], str]]) -> list[str]:
    """Copy the package, apply ``edits`` (file -> (classes, kind)), return the checks' failures."""
    parent = tmp_path / "copy"
    copy = parent / "minitorch"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for filename, (classes, kind) in edits.items():
        path = copy / filename
        mutated = mutate(path.read_text(), classes, kind)
        assert mutated.count("def _unmutated_backward") == len(classes)
        path.write_text(mutated)
    env = dict(os.environ, PYTHONPATH=str(parent), PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, str(parent), str(CHECKS)],
        cwd=tmp_path,  # not the repository root, whose minitorch would shadow the copy
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(report["file"]).resolve() == (copy / "__init__.py").resolve(), report["file"]
    return report["failures"]


def test_mutation_list_covers_every_backward() -> None:
    # Every function with a backward is mutated; lt and eq by a leak, the others by zero and scale.
    names = {(side, name) for _, side, name in MUTATIONS}
    assert {n for s, n in names if s == "scalar"} == set(SCALAR_CASES)
    assert {n for s, n in names if s == "tensor"} == {
        n for n, cases in TENSOR_CASES.items() if not cases[0].no_backward
    }
    assert {n for kind, _, n in MUTATIONS if kind == "zero"} >= {"Exp", "Log"}


def test_unmutated_rewrite_passes(tmp_path: Path) -> None:
    # The copy, the rewrite and the subprocess change nothing by themselves.
    edits = {
        filename: (classes_with_backward((PACKAGE / filename).read_text()), "identity")
        for filename in SOURCES.values()
    }
    failures = run_checks_on_copy(tmp_path, edits)
    assert failures == [], "\n".join(failures)


@pytest.mark.parametrize(("kind", "side", "name"), MUTATIONS, ids=[f"{k}-{s}-{n}" for k, s, n in MUTATIONS])
def test_mutated_backward_is_caught(tmp_path: Path, kind: str, side: str, name: str) -> None:
    failures = run_checks_on_copy(tmp_path, {SOURCES[side]: ([name], kind)})
    own = re.compile(rf"^{side} {name}[ :]")
    composite = re.compile(rf"^{side} {COMPOSITE}[ :]")
    assert any(own.match(f) for f in failures), (
        f"{kind} mutation of {side} {name} not caught by its own checks; failures:\n" + "\n".join(failures)
    )
    strays = [f for f in failures if not (own.match(f) or composite.match(f))]
    assert not strays, "failures outside the mutated function:\n" + "\n".join(strays)
