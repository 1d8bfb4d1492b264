"""The shared core (cachetail/) never imports the processes (api, invalidator): each
process loads only its own code, and the core can be read without either."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "cachetail"
PROCESSES = ("api", "invalidator")


def imported(tree: ast.AST) -> list[tuple[int, str]]:
    """Every module an import statement names, at any depth (functions included)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def process_imports(source: str, name: str) -> list[str]:
    return [f"{name}:{line} imports {module}" for line, module in imported(ast.parse(source, name))
            if module.split(".")[0] in PROCESSES]


def test_the_check_finds_imports_at_any_depth() -> None:
    source = ("import api\nimport apis\nfrom cachetail import api\n"
              "def f():\n    if True:\n        from invalidator.worker import main\n")
    assert process_imports(source, "m.py") == ["m.py:1 imports api", "m.py:6 imports invalidator.worker"]


def test_no_core_module_imports_the_processes() -> None:
    modules = sorted(CORE.rglob("*.py"))
    assert len(modules) > 10  # the core was found
    found = [line for path in modules for line in process_imports(path.read_text(), str(path.relative_to(CORE)))]
    assert found == []
