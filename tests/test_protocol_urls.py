"""v1 endpoints: paths in, endpoints out; URLs built for clients; the stream a request names."""

from __future__ import annotations

import pytest

from mmstream.errors import InvalidStreamIdError, ProtocolError
from mmstream.protocol import (
    SUBPROTOCOL,
    Append,
    Endpoint,
    Hello,
    List,
    Stat,
    endpoint_url,
    parse_path,
    resolve_stream,
)


def test_subprotocol() -> None:
    assert SUBPROTOCOL == "mmstream.v1"


@pytest.mark.parametrize(
    ("target", "endpoint"),
    [
        ("/v1", Endpoint()),
        ("/v1/", Endpoint()),
        ("/v1?x=1", Endpoint()),
        ("/v1/streams/show-42", Endpoint("show-42")),
        ("/v1/streams/show_42?from=0", Endpoint("show_42")),
        ("/v1/streams/%2e%2e", Endpoint("..")),  # the manager refuses it as invalid-id
        ("/v1/streams/a%2Fb", Endpoint("a/b")),
        ("/v1/streams/%c0%ae", Endpoint("\ufffd\ufffd")),  # not UTF-8: invalid-id, no crash
        ("/", None),
        ("/v2", None),
        ("/v1/streams", None),
        ("/v1/streams/", None),
        ("/v1/streams/a/b", None),
        ("/v1/other/a", None),
        ("/healthz", None),
        ("/v1/streams/" + "x" * 257, None),
        ("/v1/streams/" + "%41" * 300, None),
    ],
)
def test_parse_path(target: str, endpoint: Endpoint | None) -> None:
    assert parse_path(target) == endpoint


@pytest.mark.parametrize(
    ("base", "stream", "url"),
    [
        ("ws://127.0.0.1:8765", None, "ws://127.0.0.1:8765/v1"),
        ("ws://127.0.0.1:8765/", "s1", "ws://127.0.0.1:8765/v1/streams/s1"),
        ("ws://h:1/v1", "s1", "ws://h:1/v1/streams/s1"),
        ("http://h:1", None, "ws://h:1/v1"),
        ("https://h/mm/", "a b", "wss://h/mm/v1/streams/a%20b"),
    ],
)
def test_endpoint_url(base: str, stream: str | None, url: str) -> None:
    assert endpoint_url(base, stream) == url


@pytest.mark.parametrize("base", ["ftp://h", "127.0.0.1:8765", "ws://"])
def test_endpoint_url_refuses_other_schemes(base: str) -> None:
    with pytest.raises(ValueError):
        endpoint_url(base)


def test_resolve_stream() -> None:
    assert resolve_stream(Stat(stream="a"), None) == "a"
    assert resolve_stream(Stat(), "b") == "b"
    assert resolve_stream(Stat(stream="b"), "b") == "b"
    assert resolve_stream(List(), "b") is None
    assert resolve_stream(Hello(), None) is None
    with pytest.raises(ProtocolError, match="missing field 'stream'"):
        resolve_stream(Append(), None)
    with pytest.raises(ProtocolError, match="not the stream this connection is bound to"):
        resolve_stream(Append(stream="a"), "b")


def test_protocol_package_imports_no_io() -> None:
    """protocol/ stays sans-I/O: importing it pulls in no event loop, HTTP or WebSocket library."""
    import subprocess
    import sys

    code = (
        "import sys, mmstream.protocol\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('trio', 'websockets', 'trio_websocket', 'h11', 'wsproto', 'asyncio')]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("stream", ["", "a" * 400])
def test_a_bound_endpoint_needs_an_id_its_path_can_carry(stream: str) -> None:
    with pytest.raises(InvalidStreamIdError, match="invalid stream id"):
        endpoint_url("ws://h:1", stream)
