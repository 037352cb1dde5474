"""Make the project importable when pytest runs without an installed package.

pykbroker is not installed into the venv (no editable install) and ``pyproject.toml`` sets no
``pythonpath``, so the project root is put on ``sys.path`` here, before any test module in
this folder imports ``pykbroker``.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
