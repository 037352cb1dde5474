"""B2: ``pykbroker/raft`` is sans-I/O -- no trio, sockets, files, clock or global random."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import pykbroker.raft

RAFT_DIR = Path(pykbroker.raft.__file__).parent
MODULES = sorted(RAFT_DIR.glob("*.py"))
FORBIDDEN_MODULES = {
    "trio",
    "anyio",
    "asyncio",
    "socket",
    "ssl",
    "selectors",
    "select",
    "time",
    "datetime",
    "random",
    "secrets",
    "os",
    "io",
    "pathlib",
    "shutil",
    "tempfile",
    "threading",
    "subprocess",
    "multiprocessing",
    "pykbroker.server",
    "pykbroker.log.log",
}
FORBIDDEN_CALLS = {"open", "print", "input", "exec", "eval", "__import__", "breakpoint"}


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_raft_package_has_modules_to_check() -> None:
    assert {m.name for m in MODULES} >= {"replica.py", "quorum_state.py", "memory_log.py"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_a_raft_module_imports_no_io_clock_or_global_random(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for name in _imports(tree):
        root = name.split(".")[0]
        assert root not in FORBIDDEN_MODULES, f"{path.name} imports {name}"
        assert name not in FORBIDDEN_MODULES, f"{path.name} imports {name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in FORBIDDEN_CALLS, f"{path.name} calls {node.func.id}()"


def test_importing_the_raft_package_pulls_in_no_trio_or_socket() -> None:
    code = (
        "import sys, pykbroker.raft, pykbroker.raft.wire;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('trio', 'socket', 'ssl')"
        " or m.startswith('pykbroker.server'));"
        "print(','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""
