"""`python -m puzzles` and `python -m puzzles check` as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from puzzles.catalog import PUZZLE_NAMES
from puzzles.rules import SOLUTIONS_FILE

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "puzzles", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_check_passes_on_the_solutions() -> None:
    result = run("check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 rule violation(s) in 21 puzzles" in result.stdout


def test_check_fails_on_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "attempt.py"
    broken.write_text(SOLUTIONS_FILE.read_text().replace("return arange(i) * 0 + 1", "return len(i)"))
    result = run("check", str(broken))
    assert result.returncode == 1
    assert "ones: rule 'calls'" in result.stdout and "len()" in result.stdout


def test_pass_table_on_numpy() -> None:
    result = run("--backends", "numpy", "--examples", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line[:2].strip().isdigit()]
    assert [row.split()[1] for row in rows] == list(PUZZLE_NAMES)
    assert all(row.split()[2] == "ok" for row in rows)


def test_bad_usage_is_one_line_and_exit_code_2() -> None:
    for args in (["--backends", "numpyy"], ["--examples", "many"], ["check", "no/such/file.py"]):
        result = run(*args)
        assert result.returncode == 2, args
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
