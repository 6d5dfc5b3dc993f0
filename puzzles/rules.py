"""The rule checker: reads solutions.py with `ast` (never runs it) and reports every broken rule.

    python -m puzzles check               # the project's solutions
    python -m puzzles check my_attempt.py # any file with the 21 functions

Each violation names the puzzle, the rule (a key of RULES) and what was found, with its line.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from puzzles.catalog import PUZZLE_NAMES, PUZZLES

SOLUTIONS_FILE = Path(__file__).with_name("solutions.py")
MAX_COLUMNS = 79  # "under 80 columns", counting the indentation of the return line
PRIMITIVES = ("arange", "where")

RULES = {
    "defined": "each puzzle is defined once, as a module-level function",
    "signature": "the parameters are the original's, with no defaults or decorators",
    "one-line": "the body is a single `return <expression>` on one line",
    "width": f"that line is at most {MAX_COLUMNS} columns",
    "calls": "only arange, where and earlier puzzles are called, with positional arguments",
    "names": "only the puzzle's parameters, arange, where and earlier puzzles are named",
    "syntax": "only arithmetic and comparison operators, @, ~ & |, indexing, slicing and .shape",
    "module": "the module holds only the puzzles, a docstring and the import of arange and where",
}

_BINARY_OPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.MatMult,
               ast.BitAnd, ast.BitOr)
_UNARY_OPS = (ast.USub, ast.UAdd, ast.Invert)
_COMPARE_OPS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)
# How to name a forbidden construct to a student.
_FORBIDDEN_NAMES = {
    ast.IfExp: "a conditional expression (use where)", ast.BoolOp: "`and`/`or` (use & and |)",
    ast.ListComp: "a list comprehension (use arange)", ast.GeneratorExp: "a generator (use arange)",
    ast.SetComp: "a set comprehension", ast.DictComp: "a dict comprehension", ast.Lambda: "a lambda",
    ast.NamedExpr: "an assignment expression (:=)", ast.List: "a list literal", ast.Dict: "a dict literal",
    ast.Set: "a set literal", ast.JoinedStr: "an f-string", ast.Starred: "a starred argument",
}


@dataclass(frozen=True)
class Violation:
    puzzle: str  # a puzzle name, or "<module>"
    rule: str  # a key of RULES
    detail: str
    line: int

    def __str__(self) -> str:
        return f"line {self.line}: {self.puzzle}: rule '{self.rule}' ({RULES[self.rule]}): {self.detail}"


def check_file(path: Path | str = SOLUTIONS_FILE) -> list[Violation]:
    return check_source(Path(path).read_text())


def check_source(source: str) -> list[Violation]:
    """Every violation in `source`, in line order; an empty list means all rules hold."""
    tree = ast.parse(source)
    lines = source.splitlines()
    violations: list[Violation] = []
    defined: dict[str, ast.FunctionDef] = {}
    for statement in tree.body:
        if isinstance(statement, ast.FunctionDef) and statement.name in PUZZLES:
            if statement.name in defined:
                violations.append(Violation(statement.name, "defined", "defined twice", statement.lineno))
            defined[statement.name] = statement
        else:
            problem = _module_statement_problem(statement, first=statement is tree.body[0])
            if problem:
                violations.append(Violation("<module>", "module", problem, statement.lineno))
    for name in PUZZLE_NAMES:
        if name not in defined:
            violations.append(Violation(name, "defined", "not defined", 1))
        else:
            violations += _check_puzzle(defined[name], lines)
    return sorted(violations, key=lambda v: (v.line, v.puzzle, v.rule))


def _module_statement_problem(statement: ast.stmt, first: bool) -> str | None:
    if first and isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant) \
            and isinstance(statement.value.value, str):
        return None  # the module docstring
    if isinstance(statement, ast.ImportFrom) and statement.module == "__future__":
        return None
    if isinstance(statement, ast.ImportFrom) and statement.module == "puzzles.primitives" \
            and all(alias.name in PRIMITIVES and alias.asname is None for alias in statement.names):
        return None
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return f"defines helper {statement.name!r}; only the 21 puzzles may be defined"
    if isinstance(statement, ast.Import | ast.ImportFrom):
        return f"imports {ast.unparse(statement)!r}; only `from puzzles.primitives import arange, where`"
    return f"has the statement {ast.unparse(statement).splitlines()[0]!r}"


def _check_puzzle(function: ast.FunctionDef, lines: list[str]) -> list[Violation]:
    name = function.name
    found: list[Violation] = []

    def report(rule: str, detail: str, line: int) -> None:
        found.append(Violation(name, rule, detail, line))

    wanted = PUZZLES[name][0]
    arguments = function.args
    got = tuple(a.arg for a in arguments.posonlyargs + arguments.args)
    if got != wanted or arguments.vararg or arguments.kwarg or arguments.kwonlyargs:
        report("signature", f"parameters ({ast.unparse(arguments)}), wanted ({', '.join(wanted)})",
               function.lineno)
    if arguments.defaults or arguments.kw_defaults and any(arguments.kw_defaults):
        report("signature", "has default values", function.lineno)
    if function.decorator_list:
        report("signature", "has a decorator", function.lineno)

    body = function.body
    if len(body) != 1 or not isinstance(body[0], ast.Return) or body[0].value is None:
        report("one-line", f"the body has {len(body)} statement(s): "
               + "; ".join(type(s).__name__ for s in body), function.lineno)
        return found
    statement = body[0]
    if statement.end_lineno != statement.lineno:
        report("one-line", f"the return spans lines {statement.lineno}-{statement.end_lineno}",
               statement.lineno)
    width = len(lines[statement.lineno - 1].expandtabs())
    if width > MAX_COLUMNS:
        report("width", f"the return line is {width} columns", statement.lineno)

    for rule, detail, line in _expression_problems(statement.value, name):
        report(rule, detail, line)
    return found


def _expression_problems(expression: ast.expr, name: str) -> list[tuple[str, str, int]]:
    """(rule, detail, line) for every construct in puzzle `name`'s return expression that is not allowed."""
    found: list[tuple[str, str, int]] = []

    def report(rule: str, detail: str, line: int) -> None:
        found.append((rule, detail, line))

    earlier = set(PUZZLE_NAMES[:PUZZLE_NAMES.index(name)])
    callees = set(PRIMITIVES) | earlier
    known_names = set(PUZZLES[name][0]) | set(PRIMITIVES)
    called_nodes = {id(node.func) for node in ast.walk(expression) if isinstance(node, ast.Call)}
    for node in ast.walk(expression):
        line = getattr(node, "lineno", expression.lineno)
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name):
                callee = node.func.id
                if callee == name:
                    report("calls", f"calls itself ({callee})", line)
                elif callee in PUZZLES and callee not in callees:
                    number = PUZZLE_NAMES.index(callee) + 1
                    report("calls", f"calls {callee} (puzzle {number}), which is not an earlier puzzle", line)
                elif callee not in callees:
                    report("calls", f"calls {callee}(), not arange, where or an earlier puzzle", line)
            elif isinstance(node.func, ast.Attribute):
                report("calls", f"calls the method .{node.func.attr}()", line)
            else:
                report("calls", f"calls {ast.unparse(node.func)!r}", line)
            if node.keywords:
                report("calls", f"passes keyword arguments to {ast.unparse(node.func)}", line)
        elif isinstance(node, ast.Name):
            if id(node) in called_nodes:
                continue  # judged above as a call
            if node.id not in known_names:
                report("names", f"uses the name {node.id!r}", line)
        elif isinstance(node, ast.Attribute):
            if node.attr != "shape" and id(node) not in called_nodes:
                report("syntax", f"uses the attribute .{node.attr} (only .shape)", line)
        elif isinstance(node, ast.Constant):
            if not (node.value is None or node.value is Ellipsis
                    or type(node.value) in (int, float)):
                report("syntax", f"uses the literal {node.value!r} (only numbers and None)", line)
        elif isinstance(node, ast.BinOp):
            if not isinstance(node.op, _BINARY_OPS):
                report("syntax", f"uses the operator {type(node.op).__name__}", line)
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, _UNARY_OPS):
                report("syntax", f"uses the operator {type(node.op).__name__} (use ~ or where)", line)
        elif isinstance(node, ast.Compare):
            if len(node.ops) > 1:
                report("syntax", "uses a chained comparison (Python joins it with `and`)", line)
            elif not isinstance(node.ops[0], _COMPARE_OPS):
                report("syntax", f"uses the comparison {type(node.ops[0]).__name__}", line)
        elif isinstance(node, ast.Tuple):
            if not _inside_subscript(node, expression):
                report("syntax", "builds a tuple outside an index", line)
        elif isinstance(node, ast.Subscript | ast.Slice | ast.expr_context | ast.operator | ast.unaryop
                        | ast.cmpop | ast.comprehension | ast.keyword | ast.arguments | ast.arg):
            continue  # allowed, or part of a construct reported above
        else:
            what = _FORBIDDEN_NAMES.get(type(node), f"the construct {type(node).__name__}")
            report("syntax", f"uses {what}", line)
    return found


def _inside_subscript(target: ast.AST, root: ast.AST) -> bool:
    """True when `target` is (part of) the index of some Subscript under `root`."""
    for node in ast.walk(root):
        if isinstance(node, ast.Subscript) and any(n is target for n in ast.walk(node.slice)):
            return True
    return False
