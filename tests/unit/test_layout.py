"""The layout rules of docs/architecture.md, checked from the source (issue 16).

- The services (culler, CLI, ds01-limits with its APIs, ds01-admin) stand on their own: from
  their entry modules, following the package's own imports transitively (module level *and*
  inside functions), no chain reaches the hub side: ``spawner/``, ``web/``,
  ``culler/registration.py``, ``jupyterhub.orm`` or
  ``dockerspawner``. Other packages are not followed: ``jupyterhub.services.auth`` (the
  services' login) loads ``jupyterhub.orm`` itself, which is JupyterHub's business.
- The benchmarks import nothing from ``tests``.
- The size rules: modules <= 450 lines (the spawner class's module <= 400), functions <= 80;
  what is still over is listed in ``SIZE_ALLOWED`` (and must go from it once split).
"""

from __future__ import annotations

import ast
import re
from collections import deque
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "ds01spawner"

SERVICE_ENTRIES = (
    "ds01spawner.culler.__main__",
    "ds01spawner.culler.service",
    "ds01spawner.cli.__main__",
    "ds01spawner.cli.main",
    "ds01spawner.services.limits_service",
    "ds01spawner.services.session_api",
    "ds01spawner.services.images_api",
    "ds01spawner.services.projects_api",
    "ds01spawner.admin.__main__",
    "ds01spawner.admin.service",
)
# The spawner side: the hub process's modules (mixins, pages) and what only the hub has.
FORBIDDEN_OWN = re.compile(r"^ds01spawner\.((spawner|web)(\.\w+)*|culler\.registration)$")
FORBIDDEN_OTHERS = ("jupyterhub.orm", "dockerspawner")
# Lazy imports that run in the hub process only, never in a service: (importer, imported).
HUB_SIDE_ONLY = {
    # ``ds01spawner.DS01Spawner``: the package's __getattr__, used by the hub's config alone
    ("ds01spawner", "ds01spawner.spawner"),
    ("ds01spawner", "ds01spawner.spawner.spawner"),
    ("ds01spawner", "ds01spawner.spawner.spawner.DS01Spawner"),
}

SIZE_RULES_ENFORCED = True
MAX_MODULE_LINES = 450
MAX_SPAWNER_LINES = 400  # the spawner class's own module
SPAWNER_MODULE = "ds01spawner/spawner/spawner.py"
MAX_FUNCTION_LINES = 80
# Modules or functions allowed over the rules, each with the reason: "<path>" for a module,
# "<path> <function>" for a function. Empty since issue 16 split the last ones; an entry whose
# code is back under the rules fails test_the_size_allow_list_has_no_stale_entries.
SIZE_ALLOWED: set[str] = set()


def module_path(name: str, root: Path = ROOT) -> Path | None:
    """The source file of one of the package's modules, None for anything else."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, also inside functions; not under ``if TYPE_CHECKING:``."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            todo.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        todo.extend(ast.iter_child_nodes(node))


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@cache
def imports_of(name: str, root: Path = ROOT) -> tuple[str, ...]:
    """The modules importing ``name`` imports (its parent packages included): its own
    modules, and other packages' modules by their dotted names (``from x import y`` counts
    as ``x`` and ``x.y``, which may or may not be a module: an over-approximation is safe)."""
    path = module_path(name, root)
    assert path is not None, name
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    found: list[str] = _parents(name)[:-1]
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.extend(_parents(alias.name))
            continue
        if node.level:
            base_parts = here.split(".")
            base_parts = base_parts[: len(base_parts) - (node.level - 1)]
            base = ".".join(base_parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        found.extend(_parents(base))
        found.extend(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return tuple(dict.fromkeys(n for n in found if n != name))


def forbidden(name: str) -> bool:
    return bool(FORBIDDEN_OWN.match(name)) or any(
        name == f or name.startswith(f + ".") for f in FORBIDDEN_OTHERS
    )


def forbidden_chains(entry: str, root: Path = ROOT) -> list[list[str]]:
    """Shortest import chains from ``entry`` to each forbidden module it reaches."""
    came_from: dict[str, str | None] = {entry: None}
    queue = deque([entry])
    chains = []
    while queue:
        current = queue.popleft()
        for target in imports_of(current, root):
            if target in came_from or (current, target) in HUB_SIDE_ONLY:
                continue
            came_from[target] = current
            if forbidden(target):
                chain, step = [], target
                while step is not None:
                    chain.append(step)
                    step = came_from[step]
                chains.append(chain[::-1])
            elif module_path(target, root) is not None:
                queue.append(target)
    return chains


@pytest.mark.parametrize("entry", SERVICE_ENTRIES)
def test_services_import_nothing_of_the_spawner_side(entry):
    assert module_path(entry) is not None, f"{entry} is gone: update SERVICE_ENTRIES"
    chains = forbidden_chains(entry)
    assert not chains, "\n".join(" -> ".join(chain) for chain in chains)


def test_the_import_check_finds_a_chain_when_there_is_one():
    """The check itself: the hub's config module reaches the spawner, and says how."""
    chains = forbidden_chains("ds01spawner.spawner.startup")
    assert chains, "startup.py no longer reaches the spawner side: pick another control"
    entry = "ds01spawner.spawner.startup"
    assert all(chain[0] == entry and forbidden(chain[-1]) for chain in chains)


def test_benchmarks_import_nothing_from_tests():
    problems = []
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        for node in _import_nodes(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""] * (node.level == 0)
            )
            problems += [
                f"{path.name}:{node.lineno} imports {n}"
                for n in names
                if n == "tests" or n.startswith("tests.")
            ]
    assert not problems, "\n".join(problems)


def oversized(
    root: Path = ROOT, max_module: int = MAX_MODULE_LINES, max_function: int = MAX_FUNCTION_LINES
) -> list[str]:
    """Modules of the package over ``max_module`` lines and functions over ``max_function``."""
    found = []
    for path in sorted((root / PACKAGE).rglob("*.py")):
        rel = path.relative_to(root)
        source = path.read_text()
        lines = source.count("\n")
        limit = min(max_module, MAX_SPAWNER_LINES) if str(rel) == SPAWNER_MODULE else max_module
        if lines > limit:
            found.append(f"{rel}: {lines} lines")
        for node in ast.walk(ast.parse(source, str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > max_function:
                    found.append(f"{rel}:{node.lineno} {node.name}: {length} lines")
    return found


def test_the_size_check_measures_modules_and_functions():
    found = oversized(max_module=0, max_function=0)
    assert any(line.startswith("ds01spawner/limits/model.py: ") for line in found)
    assert any(" explain: " in line for line in found)


_MODULE_LINE = re.compile(r"^(?P<path>[^:]+): \d+ lines$")
_FUNCTION_LINE = re.compile(r"^(?P<path>[^:]+):\d+ (?P<name>\w+): \d+ lines$")


def size_key(line: str) -> str:
    """``SIZE_ALLOWED``'s key of an ``oversized()`` line: "<path>" or "<path> <function>"."""
    m = _MODULE_LINE.match(line)
    if m:
        return m["path"]
    m = _FUNCTION_LINE.match(line)
    assert m, line
    return f"{m['path']} {m['name']}"


@pytest.mark.skipif(not SIZE_RULES_ENFORCED, reason="switched off")
def test_modules_and_functions_are_small():
    found = [line for line in oversized() if size_key(line) not in SIZE_ALLOWED]
    assert not found, "\n".join(found)


def test_the_size_allow_list_has_no_stale_entries():
    """An entry whose module or function is small now goes from SIZE_ALLOWED."""
    over = {size_key(line) for line in oversized()}
    assert not SIZE_ALLOWED - over, sorted(SIZE_ALLOWED - over)


def test_the_spawner_module_has_the_stricter_limit():
    found = oversized(max_module=10_000)
    assert all(not line.startswith(SPAWNER_MODULE + ":") for line in found)
    lines = (ROOT / SPAWNER_MODULE).read_text().count("\n")
    assert lines <= MAX_SPAWNER_LINES, f"{SPAWNER_MODULE}: {lines} lines"
