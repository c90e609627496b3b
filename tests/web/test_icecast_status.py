"""Icecast's status documents as Debian's icecast2 2.4.4 writes them (no sockets).

The reference strings below are what icecast2 2.4.4 (Debian) answered to the same requests
with two mounts: ``/live.mp3`` from ffmpeg (``-ice_name "My Radio" -ice_genre rock ...``)
and ``/second.ogg`` from curl with ``ice-name: 2001``, ``ice-audio-info`` and ``ice-bitrate``.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from mmstream.icecast import (
    ListenerRow,
    ServerStats,
    SourceStats,
    iceresponse,
    listclients_xml,
    listmounts_xml,
    stats_xml,
    status_json,
)

START = 1796408393.0  # Fri, 04 Dec 2026 18:19:53 +0000
ICECAST_LIVE = {
    "genre": "rock", "listener_peak": 2, "listeners": 1,
    "listenurl": "http://localhost:18000/live.mp3", "server_description": "desc here",
    "server_name": "My Radio", "server_type": "audio/mpeg", "server_url": "http://example.org",
    "stream_start": "Fri, 04 Dec 2026 18:19:53 +0000",
    "stream_start_iso8601": "2026-12-04T18:19:53+0000", "title": "Artist - Song", "dummy": None,
}  # fmt: skip
ICECAST_SECOND = {
    "audio_info": "ice-samplerate=44100;ice-bitrate=96;ice-channels=2", "bitrate": 96,
    "genre": "various", "ice-bitrate": 96, "ice-channels": 2, "ice-samplerate": 44100,
    "listener_peak": 0, "listeners": 0, "listenurl": "http://localhost:18000/second.ogg",
    "server_description": "Unspecified description", "server_name": 2001,
    "server_type": "audio/ogg", "stream_start": "Fri, 04 Dec 2026 18:19:53 +0000",
    "stream_start_iso8601": "2026-12-04T18:19:53+0000", "dummy": None,
}  # fmt: skip

LIVE = SourceStats(
    mount="/live.mp3",
    listenurl="http://localhost:18000/live.mp3",
    listeners=1,
    listener_peak=2,
    server_type="audio/mpeg",
    stream_start=START,
    headers={
        "ice-name": "My Radio",
        "ice-description": "desc here",
        "ice-genre": "rock",
        "ice-url": "http://example.org",
        "ice-public": "0",
    },
    title="Artist - Song",
    source_ip="127.0.0.1",
    user_agent="Lavf/59.27.100",
    total_bytes_read=63000,
    total_bytes_sent=63404,
)
SECOND = SourceStats(
    mount="/second.ogg",
    listenurl="http://localhost:18000/second.ogg",
    listeners=0,
    listener_peak=0,
    server_type="audio/ogg",
    stream_start=START,
    headers={
        "ice-name": "2001",
        "ice-bitrate": "96",
        "ice-public": "1",
        "ice-audio-info": "ice-samplerate=44100;ice-bitrate=96;ice-channels=2",
    },
)
SERVER = ServerStats(server_start=START - 1, server_id="Icecast 2.4.4")


def test_one_source_is_an_object_as_icecast_writes_it() -> None:
    got = json.loads(status_json(SERVER, [LIVE]))["icestats"]
    assert got["source"] == ICECAST_LIVE
    assert list(got) == ["admin", "host", "location", "server_id", "server_start",
                         "server_start_iso8601", "source"]  # fmt: skip
    assert got["server_start"] == "Fri, 04 Dec 2026 18:19:52 +0000"


def test_several_sources_are_a_list_with_icecasts_types() -> None:
    got = json.loads(status_json(SERVER, [LIVE, SECOND]))["icestats"]["source"]
    assert got == [ICECAST_LIVE, ICECAST_SECOND]


def test_no_source_no_key_and_a_dummy() -> None:
    got = json.loads(status_json(SERVER, []))["icestats"]
    assert "source" not in got and got["dummy"] is None


def test_values_are_typed_as_xml2json_types_them() -> None:
    def typed(title: str) -> object:
        source = SourceStats("/m", "http://h/m", 0, 0, "audio/mpeg", START, title=title)
        return json.loads(status_json(SERVER, [source]))["icestats"]["source"]["title"]

    assert typed("1999") == 1999
    assert typed("-12.5") == -12.5
    assert typed("007") == "007"  # a leading zero keeps a string
    assert typed("0.5") == "0.5"
    assert typed("0") == 0
    assert typed("TRUE") is True
    assert typed("") is None
    assert typed('He said "hi"\n') == 'He said "hi"\n'
    assert typed("1e5") == "1e5"  # no exponents in XPath numbers


def test_admin_stats_is_icecasts_tree() -> None:
    root = ET.fromstring(stats_xml(SERVER, [LIVE]))
    names = [child.tag for child in root]
    assert names[:-1] == sorted(names[:-1]) and names[-1] == "source"
    assert {"listeners", "sources", "server_id", "client_connections"} <= set(names)
    source = root.find("source")
    assert source is not None and source.get("mount") == "/live.mp3"
    tags = [child.tag for child in source]
    assert tags == sorted(tags)
    assert source.findtext("max_listeners") == "unlimited"
    assert source.findtext("total_bytes_sent") == "63404"


def test_hostile_text_is_escaped_and_xml_stays_parseable() -> None:
    source = SourceStats("/m", "http://h/m", 0, 0, "audio/mpeg", START,
                         title="</title><x a='1'>&\x00\x1b", user_agent="<script>")  # fmt: skip
    root = ET.fromstring(stats_xml(SERVER, [source]))
    assert root.findtext("source/title") == "</title><x a='1'>&  "
    rows = [ListenerRow(7, "::1", '"><b>', 3)]
    listed = ET.fromstring(listclients_xml('/m"x', rows))
    assert listed.find("source").get("mount") == '/m"x'  # type: ignore[union-attr]
    assert listed.findtext("source/listener/UserAgent") == '"><b>'


def test_text_is_escaped_and_an_admin_answer_stays_parseable() -> None:
    from mmstream.icecast._status import xml_text

    hostile = "</message><return>1</return>&amp; <![CDATA[ ]]> é"
    assert xml_text(hostile) == (
        "&lt;/message&gt;&lt;return&gt;1&lt;/return&gt;&amp;amp; &lt;![CDATA[ ]]&gt; é"
    )
    root = ET.fromstring(iceresponse(hostile + "\x00\x1b", ok=False))
    assert root.findtext("message") == hostile + "  "
    assert root.findtext("return") == "0"


def test_listclients_as_libretime_azuracast_and_2_4_4_parsers_read_it() -> None:
    rows = [ListenerRow(6, "127.0.0.1", "TestAgent/1.0", 1), ListenerRow(9, "::1", "mpv", 30)]
    root = ET.fromstring(listclients_xml("/streams/radio", rows))
    source = root.find("source")
    assert source is not None and source.get("mount") == "/streams/radio"
    assert source.findtext("Listeners") == "2"  # Debian's icecast2 2.4.4
    assert source.findtext("listeners") == "2"  # Icecast-KH, read by AzuraCast
    listeners = source.findall("listener")
    assert [(x.findtext("ID"), x.findtext("IP"), x.findtext("UserAgent"), x.findtext("Connected"))
            for x in listeners] == [("6", "127.0.0.1", "TestAgent/1.0", "1"),
                                    ("9", "::1", "mpv", "30")]  # fmt: skip
    assert [child.tag for child in listeners[0]] == ["IP", "UserAgent", "Connected", "ID"]


def test_listmounts_as_icecast() -> None:
    expected = (
        '<?xml version="1.0"?>\n<icestats><source mount="/live.mp3"><fallback></fallback>'
        "<listeners>1</listeners><Connected>0</Connected><content-type>audio/mpeg"
        "</content-type></source></icestats>\n"
    )
    assert listmounts_xml([LIVE]).decode() == expected
