"""The layout of src/medchat is part of the design (docs/architecture.md): these tests keep it.

Stage folders import only the folders below them; `report` stays torch-free; the top level stays
small; and the size limits of issue 15 only ever tighten (a ratchet of the known exceptions).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "medchat"

# Top to bottom: a folder may import the folders after it, never one before it.
STAGES = ("serve", "report", "train", "eval", "ground", "infer", "models", "data")
# Shared modules at the top: anything may import them, and they import only each other.
SHARED = ("config", "console", "errors", "fileio", "prompts", "runinfo", "runs")
# Entry points that wire stages together: they may import anything.
ENTRY = ("cli", "demo", "sweep")

MAX_MODULE_LINES = 800
MAX_FUNCTION_LINES = 120
# Known exceptions (issue 15 is still splitting them): each may shrink, none may grow, and a new
# one fails. Lower the numbers when a split lands; delete an entry once it is under the limit.
LONG_MODULES = {
    "cli.py": 1050,
}
LONG_FUNCTIONS = {}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "resources" not in p.parts)


def _place(path: Path) -> str:
    """'serve', 'config', ... : the stage folder of a module, or its name at the top level."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported(tree: ast.AST) -> set[str]:
    """Every medchat place a module imports, lazily or not ('eval', 'config', ...)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "medchat":
                continue
            if len(parts) > 1:
                found.add(parts[1])
            else:  # from medchat import x
                found.update(a.name for a in node.names if a.name != "__version__")
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "medchat" and len(parts) > 1:
                    found.add(parts[1])
    return found


def _allowed(place: str) -> set[str]:
    if place in ENTRY or place == "__init__":
        return set(STAGES) | set(SHARED) | set(ENTRY)
    if place in SHARED:
        return set(SHARED)
    return set(STAGES[STAGES.index(place) :]) | set(SHARED)


def test_every_module_sits_in_a_known_place() -> None:
    places = {_place(p) for p in _modules()}
    assert places <= set(STAGES) | set(SHARED) | set(ENTRY) | {"__init__"}, places


def test_stages_import_only_the_stages_below_them() -> None:
    wrong = []
    for path in _modules():
        place = _place(path)
        for target in _imported(ast.parse(path.read_text())) - _allowed(place):
            wrong.append(f"{path.relative_to(PACKAGE)} imports medchat.{target}")
    assert not wrong, "\n".join(wrong)


def test_the_layering_check_sees_an_upward_import(tmp_path: Path) -> None:
    code = "def f():\n    from medchat.serve.api import serve\n    from medchat import config\n"
    assert _imported(ast.parse(code)) == {"serve", "config"}
    assert "serve" not in _allowed("eval") and "eval" in _allowed("train")


def test_the_top_level_is_small() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 12, top


def test_the_report_does_not_import_torch() -> None:
    code = (
        "import sys\nimport medchat.report.report, medchat.report.compare, medchat.eval.results\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_run_folders_are_read_and_named_in_one_module() -> None:
    # runs.py names a run folder's files; every other module goes through it (runs.CONFIG, ...).
    files = r"run_info\.json|train_summary\.json|metrics\.jsonl|data_manifest\.json|config\.yaml"
    joined = re.compile(r'/\s*"(?:' + files + r'|MODEL_CARD\.md|prompt\.txt)"')
    found = [
        f"{p.relative_to(PACKAGE)}: {m.group(0)}"
        for p in _modules()
        if p.name != "runs.py"
        for m in joined.finditer(p.read_text())
    ]
    assert not found, "\n".join(found)


def _function_lengths(tree: ast.AST) -> dict[str, int]:
    lengths = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = prefix + child.name
                lengths[name] = child.end_lineno - child.lineno + 1
                # Nested functions count inside their parent, not again on their own.
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")

    visit(tree, "")
    return lengths


def test_modules_and_functions_stay_within_their_limits() -> None:
    too_long = []
    for path in _modules():
        rel = str(path.relative_to(PACKAGE))
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > LONG_MODULES.get(rel, MAX_MODULE_LINES):
            too_long.append(f"{rel}: {lines} lines")
        for name, n in _function_lengths(ast.parse(text)).items():
            if n > LONG_FUNCTIONS.get(f"{rel}:{name}", MAX_FUNCTION_LINES):
                too_long.append(f"{rel}:{name}: {n} lines")
    assert not too_long, "\n".join(too_long)


@pytest.mark.parametrize("table", [LONG_MODULES, LONG_FUNCTIONS])
def test_every_known_exception_still_exists(table: dict[str, int]) -> None:
    # A stale entry would let a file grow back past the limit unnoticed.
    for key in table:
        assert (PACKAGE / key.split(":")[0]).is_file(), key
