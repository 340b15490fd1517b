"""The package's shape holds: no import circle between its modules, imports at the top (except the optional heavy
dependencies, each with its reason), functions a reader can hold, comments that state rules rather than history."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "longlora_mini"
# imported inside functions only: GPU-only or optional extras that a CPU install does not have
OPTIONAL = {"deepspeed", "bitsandbytes", "flash_attn", "ipywidgets"}
MAX_FUNCTION_LINES = 80


def modules() -> dict[str, ast.Module]:
    """Dotted module name -> its syntax tree, for every file of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(), filename=str(path))
    return found


def imported(name: str, tree: ast.Module, known: set[str], is_package: bool) -> set[str]:
    """The package's own modules that `name` imports (relative and absolute, at any depth of the file)."""
    base = name.split(".") if is_package else name.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                root = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                root = node.module or ""
            candidates = [root] + [f"{root}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        out |= {c for c in candidates if c in known and c != name}
    return out


def import_graph() -> dict[str, set[str]]:
    trees = modules()
    known = set(trees)
    packages = {n for n in trees if (PACKAGE.parent / n.replace(".", "/") / "__init__.py").exists()}
    # a package's __init__ imports its modules; the modules importing their package is not a circle of code
    return {n: imported(n, t, known, n in packages) - {p for p in packages if n.startswith(p + ".")}
            for n, t in trees.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_the_import_graph_has_no_circle():
    graph = import_graph()
    assert graph["longlora_mini.models"] >= {"longlora_mini.merge"}  # the walk sees relative imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def function_level_imports() -> list[tuple[str, int, str, bool]]:
    """(file, line, imported module, whether the line carries a comment with its reason) for every import inside a
    function of the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                    reason = "#" in lines[node.lineno - 1] or lines[node.lineno - 2].strip().startswith("#")
                    found.append((str(path.relative_to(PACKAGE)), node.lineno, "." * getattr(node, "level", 0)
                                  + (module or ""), reason))
    return found


def test_imports_sit_at_the_top_but_for_optional_heavy_dependencies_with_their_reason():
    misplaced = [f"{f}:{line} {m}" for f, line, m, _ in function_level_imports() if m.split(".")[0] not in OPTIONAL]
    assert misplaced == [], "move these imports to the top of their module:\n" + "\n".join(misplaced)
    unexplained = [f"{f}:{line} {m}" for f, line, m, reason in function_level_imports() if not reason]
    assert unexplained == [], "say why each import stays inside its function (a comment on or above it):\n" + \
        "\n".join(unexplained)


def test_no_function_is_longer_than_a_reader_can_hold():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({length} lines)")
    assert long == [], f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_no_module_defines_a_name_twice():
    """A second `def` of the same name silently replaces the first for every caller (the grid's seed summary was lost
    that way once); ruff's F811 misses it when the first is used inside a function body."""
    twice = []
    for path in sorted(PACKAGE.rglob("*.py")):
        seen = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if node.name in seen:
                    twice.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
                seen.add(node.name)
    assert twice == [], "defined twice:\n" + "\n".join(twice)


@pytest.mark.parametrize("pattern, what", [(r"\bP\d{1,2}\b(?![\w(])", "a probe id"), (r"\b20\d\d-\d\d-\d\d\b", "a date"),
                                           (r"probes\.md", "the lab notebook's old path")])
def test_package_comments_state_rules_not_history(pattern, what):
    """How a rule was found belongs in the lab notebook (docs/lab/notebook.md); the code says the rule."""
    hits = [f"{p.relative_to(PACKAGE)}:{i}: {line.strip()}" for p in sorted(PACKAGE.rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(pattern, line)]
    assert hits == [], f"{what} in package code:\n" + "\n".join(hits)
