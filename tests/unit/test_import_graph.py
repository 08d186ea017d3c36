"""The layout holds: data flows one way (cli -> runbooks -> actions -> formats -> streams and storage), no module
of pgdr imports itself back through others, and nothing outside its home asks which format or storage it has.

Every import counts, at the top of a module or inside a function (an import inside a function hides a cycle, it
does not remove it), and so does an import kept for type checking only.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SOURCE / "pgdr"
SHARED_ACTION_MODULES = {"pgdr.actions.shared"}
# lower number, lower layer: a module may import its own layer's modules or lower ones, never a higher one
LAYERS = {"pgdr.cli": 5, "pgdr.observe": 5, "pgdr.runbooks": 4, "pgdr.actions": 3, "pgdr.formats": 2, "pgdr.wal": 2,
          "pgdr.streams": 1, "pgdr.storage": 1}


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    """The pgdr modules a module imports: `from pgdr.a import b` is pgdr.a.b when that is a module, else pgdr.a."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("pgdr")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pgdr"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in MODULES else node.module)
    return {name for name in found if name in MODULES}


GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def layer(module: str) -> int | None:
    return next((rank for prefix, rank in LAYERS.items() if module == prefix or module.startswith(prefix + ".")),
                None)


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle as a path of modules (first == last), or []."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return []


def test_the_graph_sees_imports_inside_functions_and_the_cycle_finder_finds_cycles() -> None:
    assert "pgdr.runbooks.restore" in GRAPH["pgdr.cli"], "cli imports its commands inside functions"
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_back_through_others() -> None:
    assert find_cycle(GRAPH) == []


def test_actions_never_import_each_other_except_a_shared_helper() -> None:
    crossings = {(source, target) for source, targets in GRAPH.items() if source.startswith("pgdr.actions.")
                 for target in targets if target.startswith("pgdr.actions.") and target not in SHARED_ACTION_MODULES}
    assert crossings == set()


@pytest.mark.parametrize("source", sorted(name for name in GRAPH if layer(name) is not None))
def test_imports_go_down_the_layers_only(source: str) -> None:
    upward = {target for target in GRAPH[source]
              if (rank := layer(target)) is not None and rank > layer(source)}  # type: ignore[operator]
    assert upward == set(), f"{source} imports a higher layer"


def test_storage_and_streams_know_nothing_of_the_interface_or_the_formats() -> None:
    for module in (name for name in GRAPH if name.startswith(("pgdr.storage", "pgdr.streams"))):
        assert not GRAPH[module] & {"pgdr.ui", "pgdr.context", "pgdr.config"} - ({"pgdr.config"}
                                                                                 if module == "pgdr.storage.s3"
                                                                                 or module == "pgdr.storage" else set())
    assert "pgdr.streams.encryption" not in set().union(*(GRAPH[name] for name in GRAPH
                                                          if name.startswith("pgdr.storage")))


def test_the_cli_reads_no_storage() -> None:
    assert not GRAPH["pgdr.cli"] & {"pgdr.storage", "pgdr.storage.local", "pgdr.storage.s3", "pgdr.catalog"}


def source_lines(outside: str) -> list[str]:
    return [f"{module}: {line.strip()}" for module, path in MODULES.items()
            if not module.startswith(outside) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(("pattern", "home"), [
    (r"isinstance\([^)]*LocalStorage", "pgdr.storage"),
    (r"local_path\([^)]*\)\s+is\s+(not\s+)?None", "pgdr.storage"),
    (r"[=!]=\s*[\"']split[\"']|[\"']split[\"']\s*[=!]=", "pgdr.formats"),
    (r"[=!]=\s*[\"']plain[\"']|[\"']plain[\"']\s*[=!]=", "pgdr.formats"),
])
def test_only_its_home_asks_which_kind_it_has(pattern: str, home: str) -> None:
    assert [line for line in source_lines(home) if re.search(pattern, line)] == []
