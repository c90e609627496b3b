"""Icecast 2.4's status documents, written from plain values: no sockets, no server state.

Radio software reads these and nothing else: AzuraCast's ``nowplaying`` library reads
``/status-json.xsl`` (and ``/admin/stats`` with an admin password), LibreTime's playout
reads ``/admin/stats.xml`` (``source[@mount]/listeners``), dashboards read
``/admin/listclients``. So they are written as Debian's icecast2 2.4.4 writes them, quirks
included:

- ``/admin/stats``: ``<icestats>`` with the server's values, then one ``<source
  mount="...">`` per mount, each element name sorted, as Icecast's stats tree is.
- ``/status-json.xsl`` is that tree through Icecast's ``xml2json.xslt``: attributes are
  dropped (a source is known by its ``listenurl``), some fields are hidden, a hidden last
  field leaves ``"dummy": null`` behind, *one* source is an object and several a list (none:
  no ``source`` key), and a value that looks like a number or a boolean *is* one
  (``"server_name": 2001`` for a station named 2001), as in Icecast. Unlike Icecast, such
  numbers are always valid JSON (Icecast writes ``.5`` as it is).
- ``/admin/listclients``: the listener count as both ``<Listeners>`` (2.4.4's spelling) and
  ``<listeners>`` (Icecast-KH's, which AzuraCast ships and reads), then ``<listener>``
  elements with ``IP``, ``UserAgent``, ``Connected`` (seconds) and ``ID``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import unquote
from xml.sax.saxutils import escape, quoteattr

import attrs

__all__ = [
    "ListenerRow",
    "ServerStats",
    "SourceStats",
    "listclients_xml",
    "listmounts_xml",
    "stats_xml",
    "status_json",
    "xml_text",
]

_XML_HEAD = '<?xml version="1.0"?>\n'
#: Fields status-json.xsl leaves out (they need the admin password in Icecast).
_HIDDEN_SOURCE = frozenset(
    {"max_listeners", "public", "source_ip", "slow_listeners", "total_bytes_read",
     "total_bytes_sent", "user_agent"}
)  # fmt: skip
_HIDDEN_SERVER = frozenset({"sources", "clients", "stats", "listeners"})
#: XPath's number(): what xml2json.xslt types as a number (no exponent, no "+").
_NUMBER = re.compile(r"\s*-?(\d+(\.\d*)?|\.\d+)\s*")
#: Characters XML 1.0 cannot carry at all (titles come from anyone).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def xml_text(value: str) -> str:
    """``value`` as an XML element's text: escaped, characters XML cannot carry as spaces.
    (This module loads at the first status or admin request, with ``xml.sax``.)"""
    return escape(_NOT_XML.sub(" ", value))


def icecast_time(unix: float) -> tuple[str, str]:
    """``stream_start`` and ``stream_start_iso8601`` as Icecast writes them (UTC)."""
    moment = time.gmtime(unix)
    return (
        time.strftime("%a, %d %b %Y %H:%M:%S +0000", moment),
        time.strftime("%Y-%m-%dT%H:%M:%S+0000", moment),
    )


@attrs.frozen
class SourceStats:
    """One mount (a live stream) as Icecast's stats describe it."""

    mount: str
    listenurl: str
    listeners: int
    listener_peak: int
    server_type: str
    stream_start: float
    #: The source's ``ice-*``/``icy-*`` headers (lower-case names), as the stream keeps them.
    headers: Mapping[str, str] = attrs.field(factory=dict)
    title: str | None = None
    source_ip: str | None = None
    user_agent: str | None = None
    total_bytes_read: int = 0
    total_bytes_sent: int = 0
    slow_listeners: int = 0
    max_listeners: int | None = None
    #: Seconds since the source connected (``listmounts``' ``Connected``).
    connected: int = 0

    def _header(self, name: str) -> str | None:
        return self.headers.get("ice-" + name, self.headers.get("icy-" + name))

    def fields(self) -> list[tuple[str, str]]:
        """Name and text of each element, sorted by name as Icecast's stats tree is."""
        start, start_iso = icecast_time(self.stream_start)
        out: dict[str, str] = {
            "genre": self._header("genre") or "various",
            "listener_peak": str(self.listener_peak),
            "listeners": str(self.listeners),
            "listenurl": self.listenurl,
            "max_listeners": "unlimited" if self.max_listeners is None else str(self.max_listeners),
            "public": "1" if self._header("public") == "1" else "0",
            "server_description": self._header("description") or "Unspecified description",
            "server_name": self._header("name") or "Unspecified name",
            "server_type": self.server_type,
            "slow_listeners": str(self.slow_listeners),
            "stream_start": start,
            "stream_start_iso8601": start_iso,
            "total_bytes_read": str(self.total_bytes_read),
            "total_bytes_sent": str(self.total_bytes_sent),
        }
        if (url := self._header("url")) is not None:
            out["server_url"] = url
        if (bitrate := self._header("bitrate")) is not None:
            out["bitrate"] = bitrate
        if (audio_info := self._header("audio-info")) is not None:
            out["audio_info"] = audio_info
            out.update(_audio_info(audio_info))
        if self.title is not None:
            out["title"] = self.title
        if self.source_ip is not None:
            out["source_ip"] = self.source_ip
        if self.user_agent is not None:
            out["user_agent"] = self.user_agent
        return sorted(out.items())


def _audio_info(value: str) -> dict[str, str]:
    """``ice-samplerate=44100;ice-bitrate=96``: Icecast also states each pair on its own."""
    found = {}
    for pair in value.split(";"):
        name, equals, item = pair.partition("=")
        name = unquote(name).strip()
        if equals and name and re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            found[name] = unquote(item)
    return found


@attrs.frozen
class ServerStats:
    """The server-wide values (``<icestats>``'s own elements)."""

    server_start: float
    host: str = "localhost"
    location: str = "Earth"
    admin: str = "icemaster@localhost"
    server_id: str = "Icecast 2.4.4 (mmstream)"
    clients: int = 0
    listeners: int = 0
    #: Connections since start, by kind.
    listener_connections: int = 0
    source_connections: int = 0

    def fields(self, sources: int) -> list[tuple[str, str]]:
        start, start_iso = icecast_time(self.server_start)
        total = self.listener_connections + self.source_connections
        out = {
            "admin": self.admin,
            "client_connections": str(total),
            "clients": str(self.clients),
            "connections": str(total),
            "file_connections": "0",
            "host": self.host,
            "listener_connections": str(self.listener_connections),
            "listeners": str(self.listeners),
            "location": self.location,
            "server_id": self.server_id,
            "server_start": start,
            "server_start_iso8601": start_iso,
            "source_client_connections": str(self.source_connections),
            "source_relay_connections": "0",
            "source_total_connections": str(self.source_connections),
            "sources": str(sources),
            "stats": "0",
            "stats_connections": "0",
        }
        return sorted(out.items())


def _elements(fields: Iterable[tuple[str, str]]) -> str:
    return "".join(f"<{name}>{xml_text(value)}</{name}>" for name, value in fields)


def stats_xml(server: ServerStats, sources: Sequence[SourceStats]) -> bytes:
    """``/admin/stats`` (and ``/admin/stats.xml``)."""
    body = _elements(server.fields(len(sources)))
    for source in sources:
        body += f"<source mount={quoteattr(source.mount)}>{_elements(source.fields())}</source>"
    return (_XML_HEAD + f"<icestats>{body}</icestats>\n").encode()


def _json_value(text: str) -> object:
    """How xml2json.xslt types an element's text: empty is null, a number or a boolean is
    one (a leading zero keeps a string: ``007``), anything else a string."""
    if text == "":
        return None
    if _NUMBER.fullmatch(text) and not (text.startswith("0") and text != "0"):
        number = float(text)
        return int(number) if number.is_integer() and "." not in text else number
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _json_object(fields: Sequence[tuple[str, str]], hidden: frozenset[str]) -> dict[str, object]:
    out = {name: _json_value(value) for name, value in fields if name not in hidden}
    if fields and fields[-1][0] in hidden:
        out["dummy"] = None
    return out


def status_json(server: ServerStats, sources: Sequence[SourceStats]) -> bytes:
    """``/status-json.xsl``."""
    hidden_server = _HIDDEN_SERVER | {name for name, _ in server.fields(0) if "connections" in name}
    icestats = _json_object(server.fields(len(sources)), hidden_server)
    if sources:
        icestats.pop("dummy", None)  # the sources come last: the last element is shown
        rows = [_json_object(s.fields(), _HIDDEN_SOURCE) for s in sources]
        icestats["source"] = rows[0] if len(rows) == 1 else rows
    return json.dumps({"icestats": icestats}, ensure_ascii=False, separators=(",", ":")).encode()


@attrs.frozen
class ListenerRow:
    """One listener as ``/admin/listclients`` shows it: only what Icecast's own XML carries,
    so the status answer is built from plain values and tested without a server."""

    id: int
    ip: str
    user_agent: str
    #: Seconds since it connected.
    connected: int


def listclients_xml(mount: str, listeners: Sequence[ListenerRow]) -> bytes:
    rows = "".join(
        f"<listener><IP>{xml_text(row.ip)}</IP><UserAgent>{xml_text(row.user_agent)}</UserAgent>"
        f"<Connected>{row.connected}</Connected><ID>{row.id}</ID></listener>"
        for row in listeners
    )
    count = len(listeners)
    return (
        _XML_HEAD + f"<icestats><source mount={quoteattr(mount)}><Listeners>{count}</Listeners>"
        f"<listeners>{count}</listeners>{rows}</source></icestats>\n"
    ).encode()


def listmounts_xml(sources: Sequence[SourceStats]) -> bytes:
    rows = "".join(
        f"<source mount={quoteattr(s.mount)}><fallback></fallback>"
        f"<listeners>{s.listeners}</listeners><Connected>{s.connected}</Connected>"
        f"<content-type>{xml_text(s.server_type)}</content-type></source>"
        for s in sources
    )
    return (_XML_HEAD + f"<icestats>{rows}</icestats>\n").encode()
