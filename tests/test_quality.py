"""Project hygiene checks: ruff and mypy clean, and the sans-I/O packages stay pure."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Packages and modules that must not do I/O (STYLE B2): no trio, sockets, threads or clocks.
PURE = [
    "pykbroker/api/protocol",
    "pykbroker/raft",
    "pykbroker/metadata/image.py",
    "pykbroker/metadata/records.py",
    "pykbroker/log/record_batch.py",
    "pykbroker/log/compression.py",
]
FORBIDDEN = {"trio", "socket", "threading", "time", "asyncio", "pykbroker.server"}


def _modules(entry: str) -> list[Path]:
    path = ROOT / entry
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


@pytest.mark.parametrize("entry", PURE)
def test_pure_packages_import_no_io(entry: str) -> None:
    offenders = []
    for module in _modules(entry):
        tree = ast.parse(module.read_text(), filename=str(module))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders.extend(
                f"{module.relative_to(ROOT)} imports {name}"
                for name in names
                if name.split(".")[0] in FORBIDDEN or name.startswith("pykbroker.server")
            )
    assert offenders == []


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def test_ruff_is_clean() -> None:
    result = subprocess.run(
        [_tool("ruff"), "check", "pykbroker", "tests", "compat_tests", "benchmarks", "tools"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-5000:]


def test_mypy_strict_is_clean_on_the_package() -> None:
    result = subprocess.run(
        [_tool("mypy"), "pykbroker"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout[-5000:]
