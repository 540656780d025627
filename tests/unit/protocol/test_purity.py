"""protocol/ is sans-IO: no sockets, files, clocks, environment or event loops (STYLE.md, like h11).

Checked twice: statically, by parsing every module's imports and calls, and dynamically, by
importing every module in a fresh interpreter and looking at what it pulled into ``sys.modules``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PROTOCOL = REPO / "protocol"
MODULES = sorted(PROTOCOL.glob("*.py"))

#: Never imported by protocol/, directly (checked in the source) or through a dependency.
IO_PACKAGES = frozenset({
    "asyncio", "aiohttp", "aiomqtt", "paho", "boto3", "botocore", "av", "aiortc", "tinydb", "socket", "ssl",
    "sqlite3", "sqlalchemy", "asyncpg", "aiosqlite", "select", "selectors", "subprocess", "multiprocessing",
    "threading", "http", "urllib.request", "numpy",
})

#: Also never imported directly by a protocol module: the interpreter loads some of these itself,
#: so only the source can show that protocol/ does not use them (files, clocks, environment).
DIRECT_ONLY = frozenset({
    "os", "pathlib", "io", "time", "datetime", "shutil", "tempfile", "glob", "sys", "signal", "logging",
    "random", "importlib", "urllib", "zoneinfo", "calendar",
})

FORBIDDEN_CALLS = frozenset({"open", "input", "print", "exec", "eval", "__import__", "breakpoint"})
#: Clock reads by attribute, whatever module they come from (datetime.now, time.time, ...).
FORBIDDEN_ATTRIBUTES = frozenset({"now", "utcnow", "today", "time_ns", "monotonic", "perf_counter", "environ",
                                  "getenv"})
#: The one generated-code ``exec`` in schema.py builds type checks from field names (no I/O).
ALLOWED = {("schema.py", "exec")}


def _top(name: str) -> str:
    return name.split(".")[0]


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_there_are_protocol_modules_to_check() -> None:
    names = {p.name for p in MODULES}
    assert {"canonical.py", "envelope.py", "messages.py", "chain.py", "merkle.py", "checkpoint.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_imports_nothing_that_does_io(path: Path) -> None:
    imported = _imports(ast.parse(path.read_text(), str(path)))
    forbidden = IO_PACKAGES | DIRECT_ONLY
    bad = sorted(n for n in imported if n in forbidden or _top(n) in forbidden)
    assert not bad, f"{path.name} imports {bad}: protocol/ is sans-IO"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_calls_no_io_builtin_and_reads_no_clock(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    bad = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in FORBIDDEN_CALLS
            and (path.name, node.func.id) not in ALLOWED
        ):
            bad.append(f"line {node.lineno}: {node.func.id}()")
        if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRIBUTES:
            bad.append(f"line {node.lineno}: .{node.attr}")
    assert not bad, f"{path.name}: {bad}"


def test_importing_protocol_loads_no_io_package() -> None:
    code = (
        "import importlib, json, pkgutil, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "import protocol\n"
        "for m in pkgutil.iter_modules(protocol.__path__):\n"
        "    importlib.import_module('protocol.' + m.name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True, timeout=60)
    loaded = set(json.loads(out.stdout))
    assert {f"protocol.{p.stem}" for p in MODULES if p.stem != "__init__"} <= loaded
    bad = sorted(m for m in loaded if m in IO_PACKAGES or _top(m) in IO_PACKAGES)
    assert not bad, f"importing protocol loads {bad}"


def test_the_checks_would_catch_an_io_import() -> None:
    tree = ast.parse("import asyncio\nfrom os import path\nfrom datetime import datetime\nx = datetime.now()\n")
    imported = _imports(tree)
    assert {"asyncio", "os.path", "datetime.datetime"} <= imported
    assert any(isinstance(n, ast.Attribute) and n.attr == "now" for n in ast.walk(tree))
