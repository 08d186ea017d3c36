"""Mutation-testing pass on the modules that guard data (issue 12, item 4). Not part of CI: run it by hand.

    python3 tests/mutants/mutation_pass.py                        # every module, with the default samples
    python3 tests/mutants/mutation_pass.py --module retention     # one module (names: --list)
    python3 tests/mutants/mutation_pass.py --list                 # the modules, their tests and their mutants
    python3 tests/mutants/mutation_pass.py --only retention:12 sqllexer:40   # some mutants by id
    python3 tests/mutants/mutation_pass.py --sample 0             # no sampling, even for the end-to-end modules

Each mutant is one small change of one module, made on its syntax tree: a comparison flipped (< <=, == !=, in /
not in, is / is not), `and` / `or` swapped, a `not` removed, + / - and | / & swapped, an integer constant made one
more or one less, True / False swapped, a str or bytes constant emptied, a `raise` or an early `return` (one not
at the function's top level) replaced by `pass`. Docstrings, annotations, asserts and f-strings are left alone.

The work tree is copied to a temporary folder once (the tree itself is never touched; nothing under src/ is
edited), and each mutant is written into the copy in its turn. Its tests run in a process forked from this one,
which has the test tools and third-party libraries loaded but never pgdr, so every `import pgdr` in the fork, and
in every `python -m pgdr` the tests start (PYTHONPATH), reads the copy. A canary checks that before any mutant
runs. The copy's bytecode caches are hash-checked, so a cache never stands in for a changed source.

A mutant is killed when its tests fail (pytest stops at the first failure, -x; each test has a timeout), timed out
when the whole run exceeds its limit (three times the unmutated run, plus a margin: the mutant made pgdr hang),
and survives when its tests pass. Score = (killed + timed out) / mutants. Before a module's mutants, its tests run
once against the unmutated (re-printed) module: they must pass, or the module is reported as an error.

Why not mutmut: mutmut 3 needs its configuration in pyproject.toml and a mutants/ tree at the project root, runs
its whole test selection per mutant without -x, cannot sample, and installing it upgrades click under typer in a
shared environment. This script has no dependency beyond the test requirements.

Some modules are sampled, a seeded random subset of their mutants (--sample / --seed), stated in the report: the
lexer and dumpscan (nearly 1000 mutants between them, each run seconds of hypothesis tests), and restore and clean,
whose tests start PostgreSQL clusters (a minute or more per mutant on a 2-core machine).
"""

from __future__ import annotations

import argparse
import ast
import compileall
import copy
import json
import os
import py_compile
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP_COPY = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".hypothesis", ".mypy_cache", ".ruff_cache",
                                   ".pytest_cache", ".benchmarks")
UNIT = "tests/unit/"
E2E = "tests/end_to_end/"
LEXER_TESTS = (UNIT + "test_lexer_mutants.py", UNIT + "test_sqllexer.py", UNIT + "test_restore_filter.py",
               UNIT + "test_dumpscan.py")


@dataclass(frozen=True)
class Module:
    name: str
    path: str  # relative to the repository root
    tests: tuple[str, ...]  # fastest first: pytest stops at the first failure
    sample: int = 0  # mutants drawn at random (seeded); 0: all of them
    test_timeout: int = 60  # pytest-timeout per test


MODULES = (
    Module("sqllexer", "src/pgdr/sqllexer.py", LEXER_TESTS, sample=100),
    Module("dumpscan", "src/pgdr/dumpscan.py", (UNIT + "test_lexer_mutants.py", UNIT + "test_dumpscan.py",
                                                UNIT + "test_sqllexer.py", UNIT + "test_restore_filter.py"),
           sample=60),
    Module("artifact", "src/pgdr/artifact.py", (UNIT + "test_artifact.py", UNIT + "test_catalog.py")),
    Module("catalog", "src/pgdr/catalog.py", (UNIT + "test_catalog.py",)),
    Module("retention", "src/pgdr/retention.py", (UNIT + "test_retention.py",)),
    Module("compression", "src/pgdr/streams/compression.py", (UNIT + "test_compression.py",)),
    Module("storage.local", "src/pgdr/storage/local.py", (UNIT + "test_local_storage.py", UNIT + "test_catalog.py")),
    Module("bulk_load", "src/pgdr/postgres/bulk_load.py",
           (UNIT + "test_bulk_load_settings.py", UNIT + "test_many_database_restore.py")),
    Module("plain_sections", "src/pgdr/formats/plain_sections.py",
           (UNIT + "test_many_database_restore.py", UNIT + "test_restore_sections.py", UNIT + "test_plain_members.py")),
    Module("restore", "src/pgdr/actions/restore.py",
           (UNIT + "test_restore_filter.py", UNIT + "test_restore_sections.py", UNIT + "test_restore_check.py",
            E2E + "test_smoke.py::test_backup_then_restore_latest_after_accidental_data_loss",
            E2E + "test_restore_safety.py::test_restore_clean_takes_a_safety_backup_that_holds_the_replaced_state"),
           sample=12, test_timeout=300),
    Module("clean", "src/pgdr/actions/clean.py",
           (E2E + "test_runbook_local.py::test_soft_clean_then_restore_latest_init_verify_brings_data_and_logins_back",
            E2E + "test_external_mode.py::test_external_clean_hard_without_down_command_refuses_with_exit_3_and_"
                  "leaves_the_server_alone",
            E2E + "test_external_mode.py::test_external_up_and_clean_hard_run_only_the_configured_commands",
            E2E + "test_runbook_local.py::test_hard_clean_then_up_restore_latest_init_verify_on_a_fresh_cluster"),
           sample=5, test_timeout=300),
)

# Loaded once here, before any fork, so that each mutant's run does not pay for them again. Never pgdr itself.
PRELOAD = ("pytest", "_pytest.python", "_pytest.assertion.rewrite", "pytest_timeout", "hypothesis",
           "hypothesis.strategies", "hypothesis.extra.pytestplugin", "pydantic", "psycopg", "boto3", "botocore",
           "zstandard", "isal.isal_zlib", "typer", "rich.console", "rich.progress", "tenacity", "dotenv", "pyrage",
           "prometheus_client", "prometheus_client.parser")

# ---- mutants --------------------------------------------------------------------------------------------------

COMPARISONS: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
    ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
}
OPERATORS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.BitOr: ast.BitAnd, ast.BitAnd: ast.BitOr,
}
LEFT_ALONE = (ast.JoinedStr, ast.Assert)  # f-strings (their parts have no usable positions), asserts
ANNOTATION_FIELDS = {"annotation", "returns", "type_comment"}


@dataclass(frozen=True)
class Mutant:
    module: str
    index: int  # the index-th mutation opportunity of the module, in a fixed walk of its syntax tree
    line: int
    change: str  # `before` -> `after`

    @property
    def id(self) -> str:
        return f"{self.module}:{self.index}"


def _short(node: ast.AST) -> str:
    text = " ".join(ast.unparse(node).split())
    return text if len(text) <= 90 else text[:87] + "..."


class Walker:
    """Walks a module's syntax tree in a fixed order and counts the places a mutant can be made. With target=None
    it lists them; with target=k it makes the k-th change (and only that one) in the tree."""

    def __init__(self, target: int | None = None) -> None:
        self.target = target
        self.count = 0
        self.found: list[tuple[int, int, str]] = []  # (index, line, change)
        self.applied = False

    def run(self, tree: ast.Module) -> ast.Module:
        self._top_level_returns = {id(statement) for function in ast.walk(tree)
                                   if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
                                   for statement in function.body if isinstance(statement, ast.Return)}
        result = self._visit(tree)
        assert isinstance(result, ast.Module)
        return result

    def _offer(self, node: ast.AST, make: Callable[[], ast.AST]) -> ast.AST:
        index = self.count
        self.count += 1
        if self.target is None:
            after = make()
            shown_after = "pass" if isinstance(after, ast.Pass) else _short(after)
            self.found.append((index, getattr(node, "lineno", 0), f"`{_short(node)}` -> `{shown_after}`"))
        elif index == self.target:
            self.applied = True
            return ast.copy_location(make(), node)
        return node

    def _visit(self, node: ast.AST) -> ast.AST:
        if isinstance(node, LEFT_ALONE):
            return node
        for name, value in ast.iter_fields(node):
            if name in ANNOTATION_FIELDS:
                continue
            if isinstance(value, list):
                items = []
                for position, item in enumerate(value):
                    docstring = (name == "body" and position == 0 and isinstance(item, ast.Expr)
                                 and isinstance(item.value, ast.Constant) and isinstance(item.value.value, str))
                    items.append(item if docstring or not isinstance(item, ast.AST) else self._visit(item))
                setattr(node, name, items)
            elif isinstance(value, ast.AST):
                setattr(node, name, self._visit(value))
        return self._mutate(node)

    def _mutate(self, node: ast.AST) -> ast.AST:
        if isinstance(node, ast.Compare):
            for position, operator in enumerate(node.ops):
                if type(operator) in COMPARISONS:
                    node = self._offer(node, lambda position=position, original=node: _with_comparison(original,
                                                                                                         position))
        elif isinstance(node, ast.BoolOp):
            node = self._offer(node, lambda original=node: _replace(original, op=ast.Or() if isinstance(
                original.op, ast.And) else ast.And()))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            node = self._offer(node, lambda original=node: copy.deepcopy(original.operand))
        elif isinstance(node, ast.BinOp) and type(node.op) in OPERATORS and not _is_text(node.left) \
                and not _is_text(node.right):
            node = self._offer(node, lambda original=node: _replace(original, op=OPERATORS[type(original.op)]()))
        elif isinstance(node, ast.AugAssign) and type(node.op) in OPERATORS:
            node = self._offer(node, lambda original=node: _replace(original, op=OPERATORS[type(original.op)]()))
        elif isinstance(node, ast.Constant):
            node = self._constant(node)
        elif isinstance(node, ast.Raise) or (isinstance(node, ast.Return) and id(node) not in self._top_level_returns):
            node = self._offer(node, ast.Pass)
        return node

    def _constant(self, node: ast.Constant) -> ast.AST:
        value = node.value
        if isinstance(value, bool):
            return self._offer(node, lambda: ast.Constant(not value))
        if isinstance(value, int):
            node = self._offer(node, lambda: ast.Constant(value + 1))
            return self._offer(node, lambda: ast.Constant(value - 1))
        if isinstance(value, str | bytes) and value:
            return self._offer(node, lambda: ast.Constant(type(value)()))
        return node


def _is_text(node: ast.AST) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str | bytes))


def _replace(node: ast.AST, **fields: object) -> ast.AST:
    changed = copy.deepcopy(node)
    for name, value in fields.items():
        setattr(changed, name, value)
    return changed


def _with_comparison(node: ast.Compare, position: int) -> ast.AST:
    changed = copy.deepcopy(node)
    changed.ops[position] = COMPARISONS[type(node.ops[position])]()
    return changed


def list_mutants(module: Module) -> list[Mutant]:
    walker = Walker()
    walker.run(ast.parse((ROOT / module.path).read_text()))
    return [Mutant(module.name, index, line, change) for index, line, change in walker.found]


def mutated_source(source: str, index: int | None) -> str:
    """The module re-printed from its syntax tree; with index, with that one mutant in it."""
    tree = ast.parse(source)
    if index is None:
        return ast.unparse(tree) + "\n"
    walker = Walker(index)
    tree = ast.fix_missing_locations(walker.run(tree))
    if not walker.applied:
        raise ValueError(f"no mutant #{index} (the module has {walker.count})")
    return ast.unparse(tree) + "\n"


# ---- running ----------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    id: str
    module: str
    line: int
    change: str
    status: str  # killed, timeout, survived, error
    seconds: float
    detail: str = ""


@dataclass
class Tally:
    mutants: int = 0
    killed: int = 0
    survived: int = 0
    timeout: int = 0
    error: int = 0
    total: int = 0  # mutants the module has (the sample is drawn from them)
    survivors: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        scored = self.mutants - self.error
        return 100.0 * (self.killed + self.timeout) / scored if scored else 0.0


def copy_tree(scratch: Path) -> Path:
    tree = scratch / "tree"
    shutil.copytree(ROOT, tree, ignore=SKIP_COPY, symlinks=True)
    scratch.chmod(0o755)  # the cluster's OS user traverses it when pgdr runs a client tool as that user
    tree.chmod(0o755)
    for folder in ("src", "tests"):
        compileall.compile_dir(tree / folder, quiet=1, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    return tree


def preload() -> None:
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    leaked = sorted(name for name in sys.modules if name == "pgdr" or name.startswith("pgdr."))
    if leaked:
        raise SystemExit(f"pgdr was imported before the fork ({', '.join(leaked)}): the mutants would not be seen")


def run_tests(tree: Path, module: Module, log: Path, limit: float) -> tuple[str, float, str]:
    """Fork, run the module's tests on the copy, wait at most limit seconds: (status, seconds, detail)."""
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 6  # an exception before pytest ran: the mutated module does not even import
        try:
            os.setsid()  # its own process group: a timeout kills it with everything it started
            descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(descriptor, 1)
            os.dup2(descriptor, 2)
            os.chdir(tree)
            sys.path.insert(0, str(tree / "src"))
            import importlib

            imported = importlib.import_module(module.path.removeprefix("src/").removesuffix(".py").replace("/", "."))
            if not str(imported.__file__).startswith(str(tree / "src")):
                print(f"CANARY: pgdr.{module.name} was imported from {imported.__file__}, not the copy", flush=True)
                os._exit(4)
            import pytest
            from hypothesis import Phase, settings

            # A failing example is enough to kill a mutant: no shrinking (it takes longer than the tests). The
            # examples tried are the suite's own (same count, no deadline, conftest's profile otherwise).
            settings.register_profile("mutation-pass", deadline=None,
                                      phases=(Phase.explicit, Phase.reuse, Phase.generate))
            os.environ["HYPOTHESIS_PROFILE"] = "mutation-pass"
            code = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", f"--timeout={module.test_timeout}",
                                    *module.tests], plugins=[ExamplesFirst()]))
        except BaseException as error:  # noqa: B036 - whatever happens, the child must not return into the parent
            print(f"mutation pass child: {error!r}", flush=True)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - started > limit:
            _kill_group(pid)
            os.waitpid(pid, 0)
            return "timeout", time.monotonic() - started, f"over {limit:.0f} s"
        time.sleep(0.1)
    _kill_group(pid)  # whatever the tests left behind
    seconds = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return "survived", seconds, ""
    if code in (1, 2, 3, 6):  # a failed test; a collection error; an internal error; the module does not import
        return "killed", seconds, {1: "", 2: "collection error", 3: "pytest internal error",
                                   6: "the module does not import"}[code]
    return "error", seconds, f"pytest exit {code} (4: canary or usage, 5: no tests), see {log}"


class ExamplesFirst:
    """Runs the example-based tests before the property-based ones (the order is otherwise kept): most mutants
    fail an example in a fraction of a second, and -x then skips the rest."""

    def pytest_collection_modifyitems(self, items: list) -> None:  # type: ignore[type-arg]
        items.sort(key=lambda item: bool(getattr(getattr(item, "obj", None), "is_hypothesis_test", False)))


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def canary(tree: Path) -> None:
    """The tests' own `python -m pgdr` must import the copy too, through PYTHONPATH."""
    found = subprocess.run([sys.executable, "-c", "import pgdr; print(pgdr.__file__)"], cwd=tree, env=os.environ,
                           capture_output=True, text=True, check=True).stdout.strip()
    if not found.startswith(str(tree / "src")):
        raise SystemExit(f"CANARY: a subprocess imports pgdr from {found}, not from the copy {tree / 'src'}")


@dataclass
class Pass:
    tree: Path
    logs: Path
    outcomes: list[Outcome] = field(default_factory=list)

    def module(self, module: Module, mutants: list[Mutant]) -> Iterator[Outcome]:
        target = self.tree / module.path
        original = target.read_text()
        try:
            target.write_text(mutated_source(original, None))
            status, baseline, detail = run_tests(self.tree, module, self.logs / f"{module.name}.baseline.log",
                                                 limit=1800)
            print(f"  baseline (unmutated, re-printed): {status} in {baseline:.1f} s {detail}", flush=True)
            if status != "survived":
                raise SystemExit(f"the tests of {module.name} fail without a mutant: see "
                                 f"{self.logs / (module.name + '.baseline.log')}")
            limit = 3 * baseline + 30
            for mutant in mutants:
                target.write_text(mutated_source(original, mutant.index))
                log = self.logs / f"{mutant.id.replace(':', '-')}.log"
                status, seconds, detail = run_tests(self.tree, module, log, limit)
                if status in ("killed", "timeout"):
                    log.unlink(missing_ok=True)
                outcome = Outcome(mutant.id, mutant.module, mutant.line, mutant.change, status, round(seconds, 1),
                                  detail)
                self.outcomes.append(outcome)
                yield outcome
        finally:
            target.write_text(original)


def choose(module: Module, options: argparse.Namespace) -> tuple[list[Mutant], int]:
    every = list_mutants(module)
    if options.only:
        wanted = {item.split(":", 1)[1] for item in options.only if item.split(":", 1)[0] == module.name}
        return [mutant for mutant in every if str(mutant.index) in wanted], len(every)
    size = module.sample if options.sample is None else options.sample
    if size and size < len(every):
        chosen = random.Random(f"{options.seed}:{module.name}").sample(every, size)
        return sorted(chosen, key=lambda mutant: mutant.index), len(every)
    return every, len(every)


def load_results(path: Path) -> dict[str, Outcome]:
    if not path.exists():
        return {}
    return {item["id"]: Outcome(**item) for item in json.loads(path.read_text())}


def save_results(path: Path, outcomes: list[Outcome]) -> None:
    """Merged with earlier runs: a mutant run again replaces its earlier outcome."""
    merged = load_results(path) | {outcome.id: outcome for outcome in outcomes}
    ordered = sorted(merged.values(), key=lambda item: (item.module, int(item.id.split(":")[1])))
    path.write_text(json.dumps([asdict(item) for item in ordered], indent=1) + "\n")


def tally_results(outcomes: list[Outcome], modules: list[Module]) -> dict[str, Tally]:
    tallies: dict[str, Tally] = {}
    for module in modules:
        mine = [outcome for outcome in outcomes if outcome.module == module.name]
        if not mine:
            continue
        tally = tallies[module.name] = Tally(total=len(list_mutants(module)))
        for outcome in mine:
            tally.mutants += 1
            setattr(tally, outcome.status, getattr(tally, outcome.status) + 1)
            if outcome.status == "survived":
                tally.survivors.append(outcome.id)
    return tallies


def table(tallies: dict[str, Tally]) -> str:
    lines = ["| module | mutants run (of) | killed | timed out | survived | score |",
             "|---|---|---|---|---|---|"]
    total = Tally()
    for name, tally in tallies.items():
        sampled = f"{tally.mutants} (sample of {tally.total})" if tally.mutants < tally.total else str(tally.mutants)
        lines.append(f"| {name} | {sampled} | {tally.killed} | {tally.timeout} | {tally.survived} | "
                     f"{tally.score:.1f}% |" + (f" ({tally.error} errors)" if tally.error else ""))
        for attribute in ("mutants", "killed", "survived", "timeout", "error", "total"):
            setattr(total, attribute, getattr(total, attribute) + getattr(tally, attribute))
    lines.append(f"| all | {total.mutants} (of {total.total}) | {total.killed} | {total.timeout} | {total.survived} | "
                 f"{total.score:.1f}% |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--module", nargs="+", choices=[module.name for module in MODULES], help="only these modules")
    parser.add_argument("--only", nargs="+", metavar="MODULE:INDEX", help="only these mutants (ids: --list)")
    parser.add_argument("--sample", type=int, help="mutants drawn per module, 0 for all (default: per module: "
                                                   "sqllexer 100, dumpscan 60, restore 12, clean 5, the others all)")
    parser.add_argument("--seed", default="12", help="seed of the sample (default: %(default)s)")
    parser.add_argument("--list", action="store_true", help="list the modules, their tests and mutants; run nothing")
    parser.add_argument("--report", action="store_true",
                        help="print the table and the survivors from the results of earlier runs; run nothing")
    parser.add_argument("--logs", type=Path, default=Path(tempfile.gettempdir()) / "pgdr-mutation-pass",
                        help="folder for the survivors' pytest output and results.json (default: %(default)s)")
    options = parser.parse_args()
    modules = [module for module in MODULES
               if (not options.module or module.name in options.module)
               and (not options.only or module.name in {item.split(":", 1)[0] for item in options.only})]
    if options.list:
        for module in modules:
            mutants, total = choose(module, options)
            print(f"{module.name} ({module.path}): {total} mutants, {len(mutants)} run; "
                  f"tests: {' '.join(module.tests)}")
            for mutant in mutants:
                print(f"    {mutant.id:<16} line {mutant.line:<4} {mutant.change}")
        return 0
    results = options.logs / "results.json"
    if options.report:
        return report(list(load_results(results).values()), modules)
    options.logs.mkdir(parents=True, exist_ok=True)
    preload()
    with tempfile.TemporaryDirectory(prefix="pgdr-mutation-") as scratch:
        tree = copy_tree(Path(scratch))
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree / "src"), os.environ.get("PYTHONPATH")]))
        canary(tree)
        run = Pass(tree, options.logs)
        for module in modules:
            mutants, total = choose(module, options)
            print(f"{module.name}: {len(mutants)} of {total} mutants; tests: {' '.join(module.tests)}", flush=True)
            for outcome in run.module(module, mutants):
                print(f"  {outcome.status:>8} {outcome.id:<16} {outcome.seconds:6.1f} s  line {outcome.line}: "
                      f"{outcome.change} {outcome.detail}", flush=True)
                save_results(results, [outcome])
    return report(run.outcomes, modules)


def report(outcomes: list[Outcome], modules: list[Module]) -> int:
    print("\n" + table(tally_results(outcomes, modules)))
    survivors = [outcome for outcome in outcomes if outcome.status not in ("killed", "timeout")]
    if survivors:
        print("\nsurvived (or error):")
        for outcome in survivors:
            print(f"  {outcome.id:<16} line {outcome.line}: {outcome.change} {outcome.detail}")
    return 0 if not survivors else 1


if __name__ == "__main__":
    sys.exit(main())
