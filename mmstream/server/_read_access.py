"""Who may read a stream over HTTP: one rule for playback, Icecast listeners and HLS.

With access control on, a read token covering the stream in ``Authorization``, or a valid
capability (:mod:`mmstream.capability`) in the query: what a player that cannot send a
header presents (a native HLS player, and the page's ``<audio src>``, docs/http.md). The
routes differ only in what they do with the answer: a token's answer is handed a new
capability, a capability's hands on the same one (one never renews itself).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import attrs

from ..auth import Authorizer, token_from_header
from ..capability import RENEW_BY_TOKEN, Refusal, capability_in_query
from ..errors import MmstreamError
from ..streams import StreamInfo, StreamManager
from ._http import HttpRequest

__all__ = ["ReadAccess", "find_quietly", "read_access"]


@attrs.frozen
class ReadAccess:
    """A read allowed: by a token in the header, or by the capability ``query`` (to hand
    on as it is; "" by header or with access control off)."""

    query: str
    by_header: bool


async def find_quietly(manager: StreamManager, stream_id: str) -> StreamInfo | None:
    """The stream, or None: whatever the reason, the handler says it to those who may know."""
    try:
        return await manager.find(stream_id)
    except MmstreamError:
        return None


async def read_access(
    request: HttpRequest,
    manager: StreamManager,
    authorizer: Authorizer | None,
    *,
    elsewhere: Callable[[str], Awaitable[str | None]] | None = None,
    renew: str = RENEW_BY_TOKEN,
) -> ReadAccess | Refusal:
    """Whether ``request`` may read its ``stream_id`` (docs/hls.md, *Access control*); if
    not, why, in one line: 401 without token or capability (or an expired one), 403 for a
    capability that never can (forged, malformed, another stream or generation). A
    capability names a generation: for a stream this server does not hold, ``elsewhere``
    (a relaying worker's) gives the generation its owner holds, or None. ``renew`` is what
    the holder of an expired capability can do on this route (HLS: reload the playlist)."""
    if authorizer is None or not authorizer.enabled:
        return ReadAccess("", by_header=False)
    stream_id = request.params["stream_id"]
    token = token_from_header(request.header("authorization"))
    if token is not None and authorizer.allows(authorizer.authenticate(token), "GET", stream_id):
        return ReadAccess("", by_header=True)
    presented = capability_in_query(request.query) or Refusal(401, "unauthorized")
    if isinstance(presented, Refusal):
        return presented
    info = await find_quietly(manager, stream_id)
    generation = info.generation if info is not None else None
    if generation is None and elsewhere is not None:
        generation = await elsewhere(stream_id)
    now = time.time()
    checked = authorizer.capabilities.check(presented, stream_id, generation, now=now, renew=renew)
    if isinstance(checked, Refusal):
        return checked
    return ReadAccess(checked, by_header=False)
