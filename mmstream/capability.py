"""Signed read capabilities: what an HLS playlist gives the players that cannot send a header.

A native HLS player (Safari, iOS, smart TVs) fetches a playlist's segments itself and sends
no ``Authorization``; hls.js does only if the page sets ``xhrSetup``. So a playlist answered
to a request the token authorized carries, in each URI it lists, a *capability*:
``exp=<Unix time>&sig=<HMAC>``. It is not the token: it grants ``read`` of one stream (its
id and generation) until ``exp``, signed with a server key (``auth.capability_key``, random
per process when unset). A segment request carrying a valid one is served without a token;
a playlist fetched with one lists the same one again (never a later expiry: a capability
cannot renew itself, it lives as long as the token holder's request made it live).

Expiries are rounded up to a whole minute, so every listener of a stream given one in the
same minute gets the same URIs, and a cache in front (which keys on the whole URI) still
serves them all one copy.

The decisions here need no I/O: minting, checking (with the reason a refusal is one line
of), finding a capability in a query string, and adding one to every URI of a playlist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets

import attrs

__all__ = [
    "EXPIRY_GRANULE",
    "RENEW_BY_PLAYLIST",
    "RENEW_BY_TOKEN",
    "Capabilities",
    "Refusal",
    "asks_beyond_access",
    "capability_in_query",
    "decorate_playlist",
]

#: Expiries are multiples of this many seconds (see the module docstring: caches).
EXPIRY_GRANULE = 60
#: What an expired capability's holder can do, said in the refusal, per route: HLS
#: segments and playlists got theirs from a playlist, which a reload (by the page that
#: holds the token) hands a new one; a stream URL's came from ``X-Mmstream-Capability``.
RENEW_BY_PLAYLIST = "reload the playlist"
RENEW_BY_TOKEN = "get a new one with the token (X-Mmstream-Capability)"
_SIG_BYTES = 16  # 128 bits of HMAC-SHA256: RFC 2104 allows truncation to half and >= 80 bits
_EXP = re.compile(r"\d{1,12}")
_SIG = re.compile(r"[A-Za-z0-9_-]{22}")
#: The query parameters a capability is made of.
_NAMES = ("exp", "sig")
_URI_ATTRIBUTE = re.compile(r'URI="([^"]*)"')


@attrs.frozen
class Refusal:
    """Why a capability is refused, for a one-line answer: ``401`` when a fresh playlist
    fetched with the token would cure it (expired), ``403`` when it never can (forged,
    malformed, for another stream or another generation of this one)."""

    status: int
    reason: str


def capability_in_query(query: str) -> tuple[str, str] | Refusal | None:
    """The ``(exp, sig)`` a query string carries, None without either, or a refusal when
    it is malformed (one of them missing, given twice, or not of their form)."""
    found: dict[str, list[str]] = {}
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name in _NAMES:
            found.setdefault(name, []).append(value)
    if not found:
        return None
    exp, sig = found.get("exp", []), found.get("sig", [])
    if len(exp) != 1 or len(sig) != 1:
        return Refusal(403, "forbidden: a capability needs exp and sig, once each")
    if not _EXP.fullmatch(exp[0]) or not _SIG.fullmatch(sig[0]):
        return Refusal(403, "forbidden: malformed capability")
    return exp[0], sig[0]


def asks_beyond_access(query: str) -> bool:
    """Whether a query string asks for anything but access (a capability's ``exp`` and
    ``sig``): a time, an offset, ``?owner``. Routing decides by this, not by whether there
    is a query, so a listener presenting a capability is routed as one with a token."""
    return any(pair.partition("=")[0] not in _NAMES for pair in query.split("&") if pair)


class Capabilities:
    """Mints and checks capabilities with one key: the configured one, or 32 random bytes
    (capabilities then die with the process: fine for one server, but workers serving the
    same listeners need the same configured key)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key else secrets.token_bytes(32)

    def _sign(self, stream_id: str, generation: str, expires: int) -> str:
        message = f"read\n{stream_id}\n{generation}\n{expires}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()[:_SIG_BYTES]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def mint(self, stream_id: str, generation: str, *, now: float, lifetime: float) -> str:
        """The query string (``exp=…&sig=…``) granting read of this stream's generation for
        at least ``lifetime`` seconds from ``now``."""
        expires = math.ceil((now + lifetime) / EXPIRY_GRANULE) * EXPIRY_GRANULE
        return f"exp={expires}&sig={self._sign(stream_id, generation, expires)}"

    def check(
        self,
        presented: tuple[str, str],
        stream_id: str,
        generation: str | None,
        *,
        now: float,
        renew: str = RENEW_BY_TOKEN,
    ) -> str | Refusal:
        """The capability's query string (to hand on in a playlist's URIs) if ``presented``
        (from :func:`capability_in_query`) is valid for this stream now; else why not (an
        expired one: what to do, ``renew``, the route's). ``generation`` None: the stream
        does not exist, so no capability is for it."""
        exp, sig = presented
        expected = self._sign(stream_id, generation or "", int(exp))
        if generation is None or not hmac.compare_digest(expected, sig):
            return Refusal(403, "forbidden: the capability is not for this stream")
        if int(exp) <= now:
            return Refusal(401, f"unauthorized: the capability expired; {renew}")
        return f"exp={exp}&sig={sig}"


def _with_query(uri: str, query: str) -> str:
    return f"{uri}{'&' if '?' in uri else '?'}{query}"


def decorate_playlist(playlist: str, query: str) -> str:
    """``playlist`` with ``query`` added to every URI it names: the URI lines and the
    ``URI="…"`` attributes of tags (``EXT-X-MAP``, ``EXT-X-PART``, ``EXT-X-PRELOAD-HINT``,
    ``EXT-X-RENDITION-REPORT``), so whatever a playlist lists carries the capability."""
    if not query:
        return playlist
    lines = []
    for line in playlist.split("\n"):
        if line.startswith("#"):
            line = _URI_ATTRIBUTE.sub(lambda m: f'URI="{_with_query(m.group(1), query)}"', line)
        elif line.strip():
            line = _with_query(line, query)
        lines.append(line)
    return "\n".join(lines)
