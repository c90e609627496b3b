"""Icecast's side of radio, as pure decisions: ICY metadata, status documents, admin answers.

No sockets and no trio here (the handlers in :mod:`mmstream.server` do the I/O), so every
rule is tested synchronously, as :mod:`mmstream.web.ranges` is.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._hooks import AUTH_HEADER as AUTH_HEADER
from ._hooks import HookOutcome as HookOutcome
from ._hooks import ListenerHookCall as ListenerHookCall
from ._hooks import admitted as admitted
from ._icy import DEFAULT_METAINT as DEFAULT_METAINT
from ._icy import MAX_BLOCK as MAX_BLOCK
from ._icy import IcyInterleaver as IcyInterleaver
from ._icy import metadata_block as metadata_block
from ._icy import split_icy as split_icy
from ._icy import title_field as title_field

if TYPE_CHECKING:
    from ._admin import MetadataUpdate as MetadataUpdate
    from ._admin import iceresponse as iceresponse
    from ._admin import parse_metadata_update as parse_metadata_update
    from ._admin import parse_query as parse_query
    from ._admin import stream_of_mount as stream_of_mount
    from ._status import ListenerRow as ListenerRow
    from ._status import ServerStats as ServerStats
    from ._status import SourceStats as SourceStats
    from ._status import listclients_xml as listclients_xml
    from ._status import listmounts_xml as listmounts_xml
    from ._status import stats_xml as stats_xml
    from ._status import status_json as status_json

#: Loaded at their first use (:func:`__getattr__`): every server sends ICY metadata and
#: calls listener hooks, but only one asked for its status or admin answers needs these.
_LAZY = {
    "MetadataUpdate": "._admin",
    "iceresponse": "._admin",
    "parse_metadata_update": "._admin",
    "parse_query": "._admin",
    "stream_of_mount": "._admin",
    "ListenerRow": "._status",
    "ServerStats": "._status",
    "SourceStats": "._status",
    "listclients_xml": "._status",
    "listmounts_xml": "._status",
    "stats_xml": "._status",
    "status_json": "._status",
}
__all__ = [
    "AUTH_HEADER",
    "DEFAULT_METAINT",
    "MAX_BLOCK",
    "HookOutcome",
    "IcyInterleaver",
    "ListenerHookCall",
    "ListenerRow",
    "MetadataUpdate",
    "ServerStats",
    "SourceStats",
    "admitted",
    "iceresponse",
    "listclients_xml",
    "listmounts_xml",
    "metadata_block",
    "parse_metadata_update",
    "parse_query",
    "split_icy",
    "stats_xml",
    "status_json",
    "stream_of_mount",
    "title_field",
]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
