"""The domain layer: streams, their status machine, persistence and recovery.

No networking here: the server talks to storage only through :class:`StreamManager`,
obtained from :func:`open_stream_manager`.
"""

from __future__ import annotations

from ._context import MAX_TITLE_LENGTH as MAX_TITLE_LENGTH
from ._context import TRANSITIONS as TRANSITIONS
from ._context import StreamContext as StreamContext
from ._context import StreamInfo as StreamInfo
from ._context import StreamStatus as StreamStatus
from ._context import Title as Title
from ._context import WriterLease as WriterLease
from ._context import is_generation as is_generation
from ._ids import STREAM_ID_ALPHABET as STREAM_ID_ALPHABET
from ._ids import STREAM_ID_MAX_LENGTH as STREAM_ID_MAX_LENGTH
from ._ids import check_stream_id as check_stream_id
from ._ids import is_valid_stream_id as is_valid_stream_id
from ._manager import DEFAULT_CONTENT_TYPE as DEFAULT_CONTENT_TYPE
from ._manager import StreamManager as StreamManager
from ._manager import open_stream_manager as open_stream_manager
from ._tiering import StreamTier as StreamTier

__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "MAX_TITLE_LENGTH",
    "STREAM_ID_ALPHABET",
    "STREAM_ID_MAX_LENGTH",
    "TRANSITIONS",
    "StreamContext",
    "StreamInfo",
    "StreamManager",
    "StreamStatus",
    "StreamTier",
    "Title",
    "WriterLease",
    "check_stream_id",
    "is_generation",
    "is_valid_stream_id",
    "open_stream_manager",
]
