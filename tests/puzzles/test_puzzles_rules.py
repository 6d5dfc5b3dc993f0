"""The ast rule checker: the project's solutions pass, and each kind of cheat is named precisely."""

from __future__ import annotations

import pytest

from puzzles.rules import RULES, SOLUTIONS_FILE, check_file, check_source

SOURCE = SOLUTIONS_FILE.read_text()
CUMSUM = "    return a @ triu(a.shape[0])\n"


def test_the_solutions_follow_every_rule() -> None:
    assert check_file() == []


def with_cumsum_body(body: str) -> str:
    assert CUMSUM in SOURCE
    return SOURCE.replace(CUMSUM, body)


@pytest.mark.parametrize(("body", "rule", "detail"), [
    ("    b = a\n    return b @ triu(a.shape[0])\n", "one-line", "2 statement(s)"),
    ('    """doc"""\n    return a @ triu(a.shape[0])\n', "one-line", "2 statement(s)"),
    ("    return (a @\n            triu(a.shape[0]))\n", "one-line", "spans lines"),
    ("    return a @ triu(a.shape[0]) + 0 * a + 0 * a + 0 * a + 0 * a + 0 * a + 10 * a\n", "width", "80 columns"),
    ("    return a.cumsum(0)\n", "calls", "method .cumsum()"),
    ("    return a @ triu(len(a))\n", "calls", "len()"),
    ("    return a @ bucketize(a, a)\n", "calls", "bucketize (puzzle 21)"),
    ("    return cumsum(a)\n", "calls", "itself"),
    ("    return a @ triu(j=a.shape[0])\n", "calls", "keyword"),
    ("    return a @ triu(a.T.shape[0])\n", "syntax", ".T"),
    ("    return a @ triu(a.shape[0]) if a.shape[0] else a\n", "syntax", "conditional expression"),
    ("    return [x for x in a]\n", "syntax", "list comprehension"),
    ("    return a @ triu(a.shape[0]) and a\n", "syntax", "`and`/`or`"),
    ("    return (0 < a < 2) * a\n", "syntax", "chained comparison"),
    ("    return a << 1\n", "syntax", "LShift"),
    ("    return np.cumsum(a)\n", "calls", "method .cumsum()"),
    ("    return a @ triu(n)\n", "names", "'n'"),
    ("    return a @ triu(a.shape[0]) * 'x'\n", "syntax", "literal 'x'"),
    ("    return a, a\n", "syntax", "tuple outside an index"),
])
def test_a_broken_rule_is_named_with_its_puzzle(body: str, rule: str, detail: str) -> None:
    violations = check_source(with_cumsum_body(body))
    assert violations, body
    assert all(v.puzzle == "cumsum" for v in violations), violations
    assert any(v.rule == rule and detail in v.detail for v in violations), [str(v) for v in violations]
    assert f"cumsum: rule '{rule}' ({RULES[rule]})" in "\n".join(str(v) for v in violations)


def test_a_line_of_79_columns_is_allowed() -> None:
    body = "    return a @ triu(a.shape[0]) + 0 * a + 0 * a + 0 * a + 0 * a + 0 * a + 0 * a\n"
    assert len(body.rstrip("\n")) == 79
    assert check_source(with_cumsum_body(body)) == []


def test_signature_must_match_the_original() -> None:
    source = SOURCE.replace("def diff(a, i):", "def diff(a):")
    assert [(v.puzzle, v.rule) for v in check_source(source)] == [("diff", "signature")]
    source = SOURCE.replace("def diff(a, i):", "def diff(a, i=1):")
    assert [(v.puzzle, v.rule) for v in check_source(source)] == [("diff", "signature")]


def test_helpers_imports_and_missing_puzzles_are_reported() -> None:
    source = SOURCE.replace("def bucketize(v, boundaries):", "def bucketize_(v, boundaries):")
    source += "\nimport numpy as np\nTWO = 2\n"
    found = {(v.puzzle, v.rule) for v in check_source(source)}
    assert found == {("bucketize", "defined"), ("<module>", "module")}
    details = " ".join(v.detail for v in check_source(source))
    assert "helper 'bucketize_'" in details and "import numpy" in details and "TWO = 2" in details


def test_a_puzzle_defined_twice_is_reported() -> None:
    source = SOURCE + "\n\ndef ones(i):\n    return arange(i) * 0 + 1\n"
    assert [(v.puzzle, v.rule) for v in check_source(source)] == [("ones", "defined")]
