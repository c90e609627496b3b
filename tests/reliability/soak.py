"""``make soak`` sets ``MMSTREAM_SOAK=1``: the long variants (more rounds, sequences,
connections); ``make test`` runs the fast ones."""

from __future__ import annotations

import os

SOAK = os.environ.get("MMSTREAM_SOAK") == "1"


def rounds(fast: int, soak: int) -> int:
    return soak if SOAK else fast
