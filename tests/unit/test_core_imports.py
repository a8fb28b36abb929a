"""The core rule modules stay pure: no event loop, no HTTP, no database.

Validation and state transition must be testable without a socket, a LevelDB or an event loop,
and must never block or be blocked by one. This test reads each rule module's source and fails
if it imports asyncio, aiohttp or plyvel, at module level or inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "derelayl_chain"
CORE_MODULES = [
    "encoding",
    "crypto",
    "transaction",
    "block",
    "state",
    "commitment",
    "consensus",
    "genesis",
]
FORBIDDEN = frozenset({"asyncio", "aiohttp", "plyvel"})


def imported_modules(source: str) -> set[str]:
    """Every module name an import statement in ``source`` names, including nested imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # ``from derelayl_chain import encoding`` imports a submodule.
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def forbidden_imports(source: str) -> set[str]:
    """The imported modules of ``source`` that belong to a forbidden package."""
    return {name for name in imported_modules(source) if name.split(".")[0] in FORBIDDEN}


def project_source(module: str, root: Path = ROOT) -> str | None:
    """The source of a project module (``derelayl_chain.x.y``), or None for names that are not
    modules (such as a class imported from one)."""
    path = root.joinpath(*module.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    return None


def forbidden_imports_reachable_from(module: str, root: Path = ROOT) -> dict[str, set[str]]:
    """Forbidden imports of ``module`` and of every project module it imports, transitively."""
    found: dict[str, set[str]] = {}
    seen: set[str] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        source = project_source(name, root) if name not in seen else None
        seen.add(name)
        if source is None:
            continue
        if bad := forbidden_imports(source):
            found[name] = bad
        pending.extend(i for i in imported_modules(source) if i.startswith("derelayl_chain"))
    return found


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_does_not_import_io_frameworks(module: str) -> None:
    """The rule module imports none of asyncio, aiohttp and plyvel."""
    source = (PACKAGE / f"{module}.py").read_text(encoding="utf-8")
    assert forbidden_imports(source) == set()


@pytest.mark.parametrize("module", CORE_MODULES)
def test_project_modules_a_core_module_relies_on_are_pure_too(module: str) -> None:
    """No forbidden import is reachable through the project modules a rule module imports."""
    assert forbidden_imports_reachable_from(f"derelayl_chain.{module}") == {}


def test_transitive_check_finds_a_forbidden_import_two_modules_away(tmp_path: Path) -> None:
    """A rule module that imports a helper that imports asyncio is reported, via the helper."""
    package = tmp_path / "derelayl_chain"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "rule.py").write_text("from derelayl_chain import helper\n")
    (package / "helper.py").write_text("from derelayl_chain.deep import run\n")
    (package / "deep.py").write_text("import asyncio\n\ndef run(): ...\n")
    found = forbidden_imports_reachable_from("derelayl_chain.rule", tmp_path)
    assert found == {"derelayl_chain.deep": {"asyncio"}}


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "import aiohttp.web as web",
        "from plyvel import DB",
        "from asyncio.tasks import gather",
        "def f():\n    import plyvel\n",
        "if True:\n    from aiohttp import web\n",
    ],
)
def test_checker_detects_every_form_of_a_forbidden_import(source: str) -> None:
    """Plain, dotted, from-, and nested imports are all caught, so the lint can fail."""
    assert forbidden_imports(source)


@pytest.mark.parametrize(
    "source",
    ["import asyncio_mqtt", "from .asyncio import x", "import numpy as asyncio", "x = 'aiohttp'"],
)
def test_checker_ignores_look_alikes(source: str) -> None:
    """Modules that merely share a prefix, relative imports, aliases and strings are fine."""
    assert forbidden_imports(source) == set()
