"""Lint and type checks run as part of the suite, so CI's one test command covers them."""

import ast
import shutil
import subprocess
import sys
import tokenize
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("ruff") is None and not (Path(sys.prefix) / "bin" / "ruff").exists(),
                    reason="ruff is not installed: source and tests are not linted (pip install -e '.[test]')")
def test_ruff_finds_no_problems_in_source_and_tests():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "tests", "bench"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_no_type_errors_in_the_package():
    pytest.importorskip("mypy", reason="mypy is not installed: the package is not type-checked "
                                       "(pip install -e '.[test]')")
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# The test helpers have one import root, tests/ (pytest puts it on sys.path for the rootdir conftest), so each helper
# module has one name: its path from tests/ (`end_to_end.e2e_helpers`, `moto_fixtures`). pytest also puts each test
# file's own folder on sys.path, which makes a second name work (`e2e_helpers` from tests/end_to_end): Python then
# loads the file twice, as two modules with two copies of their state. tests/mutants is a tool run as a script,
# not part of the suite.
TESTS = ROOT / "tests"
FIXTURE_DECORATORS = {"pytest.fixture", "fixture"}


def source_files() -> list[Path]:
    return sorted(path for path in TESTS.rglob("*.py") if "mutants" not in path.relative_to(TESTS).parts)


def local_module(folder: Path, name: str) -> Path | None:
    path = folder.joinpath(*name.split(".")).with_suffix(".py")
    return path if path.is_file() else None


def imported_modules(path: Path) -> Iterator[tuple[ast.stmt, str, list[str]]]:
    """(statement, module name, names taken from it) for every absolute import, and pytest_plugins entries."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            yield node, "." * node.level + (node.module or ""), [alias.name for alias in node.names]
        elif isinstance(node, ast.Assign) and any(isinstance(target, ast.Name) and target.id == "pytest_plugins"
                                                  for target in node.targets):
            for element in ast.walk(node.value):
                if isinstance(element, ast.Constant) and isinstance(element.value, str):
                    yield node, element.value, []


def where(path: Path, node: ast.stmt) -> str:
    return f"{path.relative_to(ROOT)}:{node.lineno}"


def test_each_helper_module_is_imported_by_one_path_from_tests():
    names: dict[Path, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    problems = []
    for path in source_files():
        for node, module, _ in imported_modules(path):
            if module.startswith("."):
                problems.append(f"{where(path, node)}: relative import `{module}`: import the module by its path "
                                "from tests/")
            elif module.split(".")[0] == "conftest":
                problems.append(f"{where(path, node)}: imports from a conftest.py, which pytest loads for every tier "
                                "under the one name `conftest`: move what it needs into a helper module (harness)")
            elif (target := local_module(path.parent, module) or local_module(TESTS, module)) is not None:
                names[target][module].append(where(path, node))
    for target, seen in sorted(names.items()):
        canonical = ".".join(target.relative_to(TESTS).with_suffix("").parts)
        for name, places in sorted(seen.items()):
            if name != canonical:
                problems.append(f"{target.relative_to(ROOT)} imported as `{name}` ({', '.join(places)}): import it "
                                f"as `{canonical}`, its one path from tests/")
    assert not problems, "\n".join(problems)


def fixtures_of(path: Path) -> set[str]:
    def is_fixture(decorator: ast.expr) -> bool:
        function = decorator.func if isinstance(decorator, ast.Call) else decorator
        return ast.unparse(function) in FIXTURE_DECORATORS

    tree = ast.parse(path.read_text(), str(path))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and any(is_fixture(decorator) for decorator in node.decorator_list)}


def noqa_codes(path: Path) -> dict[int, str]:
    """line number -> the text after `noqa` in that line's comment."""
    with tokenize.open(path) as handle:
        return {token.start[0]: token.string.split("noqa", 1)[1] for token in tokenize.generate_tokens(handle.readline)
                if token.type == tokenize.COMMENT and "noqa" in token.string}


def test_fixtures_are_found_by_pytest_never_imported_by_name():
    """A fixture imported into a test module needs a noqa (or a dummy use) to survive the linter, and hides where
    it comes from: a fixture lives in the conftest.py of the tier that uses it, or of tests/ (or in a module of its
    pytest_plugins) when several tiers do."""
    problems = []
    for path in source_files():
        comments = noqa_codes(path)
        for node, module, taken in imported_modules(path):
            source = local_module(path.parent, module) or local_module(TESTS, module)
            if source is None:
                continue
            if any(line in comments for line in range(node.lineno, (node.end_lineno or node.lineno) + 1)):
                problems.append(f"{where(path, node)}: an import from {module} kept with noqa")
            if fixtures := sorted(fixtures_of(source).intersection(taken)):
                problems.append(f"{where(path, node)}: imports fixtures by name from {module}: {', '.join(fixtures)}")
        problems += [f"{path.relative_to(ROOT)}:{line}: noqa{codes}: a name shadowing an imported one"
                     for line, codes in sorted(comments.items()) if "F811" in codes]
    assert not problems, "\n".join(problems)


def test_each_tier_has_its_own_conftest():
    tiers = {path.parent for path in source_files() if path.name.startswith("test_") and path.parent != TESTS}
    missing = sorted(str(tier.relative_to(ROOT)) for tier in tiers if not (tier / "conftest.py").is_file())
    assert not missing, f"tiers without a conftest.py (their fixtures, or what the tier needs, in it): {missing}"
