"""The README's API table is generated from the dispatcher's table and must not drift."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_api_table_matches_what_api_versions_advertises() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_readme_apis.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_readme_starts_with_the_run_and_test_commands() -> None:
    text = (ROOT / "README.md").read_text()
    blocks = text.split("```sh\n")
    assert "pykbroker serve" in blocks[1].split("```")[0]
    assert "bash .ci/run" in blocks[2].split("```")[0]
