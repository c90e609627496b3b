"""Icecast's side of radio, as pure decisions: ICY metadata, status documents, admin answers.

No sockets and no trio here (the handlers in :mod:`mmstream.server` do the I/O), so every
rule is tested synchronously, as :mod:`mmstream.web.ranges` is.
"""

from __future__ import annotations

from ._icy import DEFAULT_METAINT as DEFAULT_METAINT
from ._icy import MAX_BLOCK as MAX_BLOCK
from ._icy import IcyInterleaver as IcyInterleaver
from ._icy import metadata_block as metadata_block
from ._icy import split_icy as split_icy
from ._icy import title_field as title_field

__all__ = [
    "DEFAULT_METAINT",
    "MAX_BLOCK",
    "IcyInterleaver",
    "metadata_block",
    "split_icy",
    "title_field",
]
