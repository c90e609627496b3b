"""CORS for browser players: which cross-origin reads a response allows (pure decisions).

A web player on another site (``<audio src>`` needs nothing, but ``fetch`` of a stream for
its ICY titles, of ``/status-json.xsl`` for now-playing, or of a ``Range`` does) can read a
response only if it carries ``Access-Control-Allow-Origin`` for the page's origin, and can
read an ``icy-*`` header only if it is listed in ``Access-Control-Expose-Headers``.
Requests with ``Icy-MetaData``, ``Range`` or ``Authorization`` are "non-simple": the browser
first sends a preflight ``OPTIONS``, answered by :func:`preflight`.

Off unless ``server.cors_origins`` lists origins (``"*"``: any). No credentials are allowed
(``Access-Control-Allow-Credentials`` is never sent): a token goes in ``Authorization``,
which a page sets itself, never in a cookie.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ALLOWED_HEADERS", "EXPOSED_HEADERS", "cors_headers", "preflight"]

Headers = list[tuple[str, str]]

#: What a player may read besides the CORS-safelisted response headers: ICY's, ranges',
#: where a time seek starts (``x-mmstream-time``, ``-offset``), and the capability an
#: answer to a token hands on for ``<audio src>`` and native HLS (docs/hls.md).
EXPOSED_HEADERS = (
    "icy-metaint, icy-name, icy-genre, icy-description, icy-url, icy-br, icy-pub, "
    "icy-public, icy-audio-info, content-length, content-range, accept-ranges, etag, "
    "x-mmstream-time, x-mmstream-offset, x-mmstream-capability"
)
#: Request headers a player may send.
ALLOWED_HEADERS = ("icy-metadata", "range", "authorization", "if-none-match", "if-range")
_METHODS = "GET, HEAD, OPTIONS"
#: How long a browser may cache a preflight answer (seconds).
_MAX_AGE = "86400"


def _allow(origin: str | None, allowed: Sequence[str]) -> Headers:
    if not allowed or origin is None:
        return []
    if "*" in allowed:
        return [("access-control-allow-origin", "*")]
    if origin.lower() in (a.lower() for a in allowed):
        return [("access-control-allow-origin", origin), ("vary", "origin")]
    return []


def cors_headers(origin: str | None, allowed: Sequence[str]) -> Headers:
    """The headers for a response to a request with ``Origin: origin`` (none when CORS is
    off, the request has no ``Origin``, or the origin is not allowed)."""
    found = _allow(origin, allowed)
    return [*found, ("access-control-expose-headers", EXPOSED_HEADERS)] if found else []


def preflight(
    origin: str | None, method: str | None, request_headers: str | None, allowed: Sequence[str]
) -> Headers | None:
    """The answer to a preflight ``OPTIONS`` (sent as 204), or None when it is refused (an
    origin not allowed, a method other than GET/HEAD, a header not in
    :data:`ALLOWED_HEADERS`): the caller answers as without CORS."""
    found = _allow(origin, allowed)
    if not found or (method or "").upper() not in ("GET", "HEAD"):
        return None
    asked = [h.strip().lower() for h in (request_headers or "").split(",") if h.strip()]
    if any(h not in ALLOWED_HEADERS for h in asked):
        return None
    return [
        *found,
        ("access-control-allow-methods", _METHODS),
        ("access-control-allow-headers", ", ".join(ALLOWED_HEADERS)),
        ("access-control-max-age", _MAX_AGE),
    ]
