"""Icecast's ``/admin/`` requests, read and answered without I/O.

Sources and radio automation (Liquidsoap, MPD, BUTT, ices, AzuraCast) set a mount's title
with ``GET /admin/metadata?mount=/streams/{id}&mode=updinfo&song=...``, in the query's
``charset`` (Icecast's default for MP3 mounts is Latin-1; today's clients send UTF-8, so
without ``charset`` UTF-8 is tried first and Latin-1 is the fallback). Icecast answers a
small XML ``iceresponse``, which libshout only checks for its status.
"""

from __future__ import annotations

import codecs
from urllib.parse import parse_qsl

import attrs

from ..errors import InvalidArgumentError, TooLargeError
from ..streams import is_valid_stream_id
from ._status import xml_text

__all__ = [
    "MAX_QUERY",
    "MetadataUpdate",
    "iceresponse",
    "parse_metadata_update",
    "parse_query",
    "stream_of_mount",
]

#: Longest query read; a title past :data:`mmstream.streams.MAX_TITLE_LENGTH` is refused
#: later with a clear message, this only bounds the work.
MAX_QUERY = 16 * 1024
_MOUNT_PREFIX = "/streams/"


@attrs.frozen
class MetadataUpdate:
    """An Icecast ``/admin/metadata?mode=updinfo`` request, parsed apart from the HTTP route
    so that the quirks of the sources sending it (the ``charset`` their ``song`` is in, a
    mount or mode that is wrong) are decided and tested without a server."""

    stream_id: str
    song: str


def parse_query(query: str, charset: str | None = None) -> dict[str, str]:
    """The query's parameters (the first of each name), percent-decoded in ``charset``.

    Raises :class:`InvalidArgumentError` for an unknown charset or bytes that are not in it
    (a clean 400, never a mangled title)."""
    if len(query) > MAX_QUERY:
        raise TooLargeError(f"the query is longer than {MAX_QUERY} characters")
    raw: dict[str, bytes] = {}
    for name, value in parse_qsl(query, keep_blank_values=True, encoding="latin-1"):
        raw.setdefault(name, value.encode("latin-1"))
    return {name: _decode(value, charset) for name, value in raw.items()}


def _decode(value: bytes, charset: str | None) -> str:
    if charset is None:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1")
    try:
        return value.decode(codecs.lookup(charset).name)
    except LookupError:
        raise InvalidArgumentError(f"unknown charset {charset[:40]!r}") from None
    except UnicodeDecodeError:
        raise InvalidArgumentError(f"the query is not valid {charset[:40]}") from None


def stream_of_mount(mount: str | None) -> str:
    """The stream id of an Icecast mount, ``/streams/{id}`` (the leading ``/`` optional)."""
    if mount is None:
        raise InvalidArgumentError("missing parameter: mount")
    path = mount if mount.startswith("/") else "/" + mount
    stream_id = path.removeprefix(_MOUNT_PREFIX)
    if not path.startswith(_MOUNT_PREFIX) or not is_valid_stream_id(stream_id):
        raise InvalidArgumentError(f"no such mount {mount[:140]!r}: mounts are /streams/{{id}}")
    return stream_id


def parse_metadata_update(query: str) -> MetadataUpdate:
    """``/admin/metadata``'s query: ``mount``, ``mode=updinfo``, ``song``, ``charset``."""
    charset = parse_query(query, "latin-1").get("charset") or None
    params = parse_query(query, charset)
    stream_id = stream_of_mount(params.get("mount"))
    mode = params.get("mode")
    if mode != "updinfo":
        raise InvalidArgumentError(f"mode must be updinfo, not {(mode or '')[:40]!r}")
    song = params.get("song")
    if song is None:
        raise InvalidArgumentError("missing parameter: song")
    return MetadataUpdate(stream_id, song)


def iceresponse(message: str, *, ok: bool) -> bytes:
    """Icecast's admin reply body: ``<iceresponse><message>..</message><return>1</return>``."""
    return (
        f'<?xml version="1.0"?>\n<iceresponse><message>{xml_text(message)}</message>'
        f"<return>{1 if ok else 0}</return></iceresponse>\n"
    ).encode()
