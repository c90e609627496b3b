"""The radio programs' drivers and the Icecast test helpers (``tests/icecast``) serve the
cluster's source tests too: import them from there rather than copy them."""

from __future__ import annotations

import sys
from pathlib import Path

ICECAST_TESTS = str(Path(__file__).resolve().parents[1] / "icecast")
if ICECAST_TESTS not in sys.path:
    sys.path.insert(0, ICECAST_TESTS)
