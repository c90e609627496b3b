"""The page's files, read from package data once and served from memory (they are small).

``GET /`` is ``index.html``; everything else lives under ``/static/``. No build step: what is
in ``mmstream/web/static/`` is what the browser gets.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources

import attrs

__all__ = ["SECURITY_HEADERS", "Asset", "find_asset"]

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

#: Sent with the page: it loads only its own files, talks only to its own server.
SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob:; "
        "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)


@attrs.frozen
class Asset:
    """One of the page's static files, loaded once from the package with its type and a
    strong ETag, so the page is served from memory and revalidated with a 304."""

    body: bytes
    content_type: str
    #: A strong validator, so a reload costs a 304 rather than the files.
    etag: str


@functools.cache
def _load(name: str) -> Asset | None:
    suffix = name[name.rfind(".") :] if "." in name else ""
    if suffix not in _TYPES:
        return None
    entry = resources.files(__package__).joinpath("static", name)
    try:
        body = entry.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    digest = hashlib.sha256(body).hexdigest()[:20]
    return Asset(body, _TYPES[suffix], f'"{digest}"')


def find_asset(path: str) -> Asset | None:
    """The asset for a request path (``/``, ``/index.html``, ``/static/app.js``), or ``None``."""
    if path in ("/", "/index.html"):
        return _load("index.html")
    name = path.removeprefix("/static/")
    # One plain file name: no subdirectories, no "..", nothing hidden.
    if name == path or not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    return _load(name)
