"""What a stream's bytes are served as: the one rule for every route that sends them.

A stream's content type is whatever its writer declared (a ``PUT``'s ``Content-Type``, a
``create``'s ``content_type``). Served back from the application's own origin as
``text/html`` or ``image/svg+xml``, those bytes would run as a page with the page's rights
(stored XSS). So only media types are served as stored; anything else goes out as
``application/octet-stream`` with ``Content-Disposition: attachment``, and every stream body
carries ``nosniff`` and a sandboxing ``Content-Security-Policy`` so that even a browser that
opens it does so as an inert, scriptless document in an opaque origin.
"""

from __future__ import annotations

import re
from typing import Final

import attrs

__all__ = ["DOWNLOAD_TYPE", "STREAM_BODY_HEADERS", "ServedType", "served_type"]

DOWNLOAD_TYPE: Final = "application/octet-stream"

#: Sent with every stream body, whatever its type.
STREAM_BODY_HEADERS: Final = (
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", "sandbox; default-src 'none'"),
)

#: Top-level types whose every subtype a browser plays or downloads, never runs.
_MEDIA_TOP_LEVEL = frozenset({"audio", "video"})
#: Other types served as stored.
_MEDIA_TYPES = frozenset({"application/ogg", "application/mp4", DOWNLOAD_TYPE})

# RFC 9110 §8.3.1 (without obs-text, so the value is plain ASCII on the wire).
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[\t !#-\[\]-~]|\\[\t -~])*"'
_MEDIA_TYPE = re.compile(
    rf"(?P<type>{_TOKEN})/(?P<subtype>{_TOKEN})"
    rf"(?P<parameters>(?:[ \t]*;[ \t]*(?:{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))?)*)[ \t]*"
)


@attrs.frozen
class ServedType:
    """The ``Content-Type`` a stream body goes out with, and whether it is a download."""

    content_type: str
    attachment: bool = False

    @property
    def headers(self) -> list[tuple[str, str]]:
        """Content-Type, the download disposition if any, and :data:`STREAM_BODY_HEADERS`."""
        headers = [("Content-Type", self.content_type)]
        if self.attachment:
            headers.append(("Content-Disposition", "attachment"))
        return [*headers, *STREAM_BODY_HEADERS]


def served_type(stored: str) -> ServedType:
    """``stored`` (a stream's declared content type) as it may be served: a well-formed
    audio, video or other media type as declared (type and subtype lower-cased), anything
    else (HTML, SVG, XML, scripts, text, malformed values) as a download."""
    match = _MEDIA_TYPE.fullmatch(stored.strip(" \t"))
    if match is None:
        return ServedType(DOWNLOAD_TYPE, attachment=True)
    media = f"{match['type']}/{match['subtype']}".lower()
    if match["type"].lower() not in _MEDIA_TOP_LEVEL and media not in _MEDIA_TYPES:
        return ServedType(DOWNLOAD_TYPE, attachment=True)
    return ServedType(media + match["parameters"].rstrip(" \t"))
