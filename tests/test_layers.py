"""The layers keep to their places: the use cases (`govern/api/`) ask the read model (`govern/readmodel/`) and hold
no SQL of their own."""

from __future__ import annotations

import ast
import re
from pathlib import Path

API = Path(__file__).resolve().parent.parent / "govern" / "api"

# SQL in a string literal: a statement's opening keywords, in any case. Docstrings are prose and not scanned (they
# name `govern audit sql "SELECT ..."`, what a command creates, ...).
SQL = re.compile(
    r"\bselect\b[\s\S]*\bfrom\b"
    r"|\bwith\s+\w+\s+as\s+(materialized\s+)?\("
    r"|\binsert\s+into\b"
    r"|\bupdate\s+\w+\s+set\b"
    r"|\bdelete\s+from\b"
    r"|\bcreate\s+(or\s+replace\s+|unique\s+|temp\s+|temporary\s+)?(table|view|index|schema|sequence|macro)\b",
    re.IGNORECASE,
)


def _docstrings(tree: ast.Module) -> set[int]:
    """The ids of the docstring nodes of the module, its classes and its functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _text(node: ast.AST) -> str | None:
    """A string literal's text (an f-string's literal parts, its holes as a space)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else " " for part in node.values)
    return None


def sql_in(path: Path) -> list[str]:
    """Each place in `path` that holds SQL text or asks a reader a query, as `file:line: what`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    prose = _docstrings(tree)
    inside_fstrings = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    found = []
    for node in ast.walk(tree):
        if id(node) in prose or id(node) in inside_fstrings:
            continue
        text = _text(node)
        if text is not None and SQL.search(text):
            found.append(f"{path.name}:{node.lineno}: SQL text {text.strip()[:60]!r}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "query":
            found.append(f"{path.name}:{node.lineno}: a .query( call")
    return sorted(found, key=lambda line: int(line.split(":")[1]))


def test_use_cases_hold_no_sql() -> None:
    found = [line for path in sorted(API.glob("*.py")) for line in sql_in(path)]
    assert not found, "SQL belongs in govern/readmodel/, not in the use cases:\n" + "\n".join(found)


def test_the_scan_finds_sql(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Select the best from a grid: prose."""\n'
        'A = "select seq from events"\n'
        'B = f"""\nWITH x AS (SELECT 1)\nSELECT * FROM x LIMIT {1}\n"""\n'
        "def f(reader):\n"
        "    return reader.query(A)\n"
    )
    assert [line.split(": ")[0] for line in sql_in(sample)] == ["sample.py:2", "sample.py:3", "sample.py:8"]
