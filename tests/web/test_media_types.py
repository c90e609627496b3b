"""Which stored content types a stream's bytes are served as: media as stored, anything a
browser could run as a page (HTML, SVG, XML, scripts) as a download. Pure, no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmstream.web.media import STREAM_BODY_HEADERS, ServedType, served_type

DOWNLOAD = ServedType("application/octet-stream", attachment=True)


@pytest.mark.parametrize(
    ("stored", "served"),
    [
        ("audio/mpeg", "audio/mpeg"),
        ("audio/ogg; codecs=opus", "audio/ogg; codecs=opus"),
        ('audio/webm;codecs="opus"', 'audio/webm;codecs="opus"'),
        ("Audio/WAV", "audio/wav"),
        ("video/mp4", "video/mp4"),
        ("application/ogg", "application/ogg"),
        ("application/octet-stream", "application/octet-stream"),
        ("application/mp4", "application/mp4"),
    ],
)
def test_media_is_served_as_stored(stored: str, served: str) -> None:
    assert served_type(stored) == ServedType(served, attachment=False)


@pytest.mark.parametrize(
    "stored",
    [
        "text/html",
        "text/html; charset=utf-8",
        "image/svg+xml",
        "application/xhtml+xml",
        "application/xml",
        "text/xml",
        "application/javascript",
        "text/plain",
        "application/pdf",
        "image/png",
        "multipart/x-mixed-replace; boundary=x",
        "",
        "audio",
        "audio/",
        "/mpeg",
        "audio/mpeg, text/html",
        "audio/mpeg; x=<script>",
        "audio/mpeg\ttext/html",
        "audio/mpé",
        'audio/mpeg; codecs="a\\"',
    ],
)
def test_anything_else_is_a_download(stored: str) -> None:
    assert served_type(stored) == DOWNLOAD


def test_headers() -> None:
    names = {name.lower() for name, _ in STREAM_BODY_HEADERS}
    assert {"x-content-type-options", "content-security-policy"} <= names
    csp = dict(STREAM_BODY_HEADERS)["Content-Security-Policy"]
    assert "sandbox" in csp and "default-src 'none'" in csp
    assert ("Content-Disposition", "attachment") in DOWNLOAD.headers
    assert ("Content-Type", "application/octet-stream") in DOWNLOAD.headers
    plain = served_type("audio/mpeg").headers
    assert ("Content-Type", "audio/mpeg") in plain
    assert all(name != "Content-Disposition" for name, _ in plain)
    assert set(STREAM_BODY_HEADERS) <= set(plain) and set(STREAM_BODY_HEADERS) <= set(
        DOWNLOAD.headers
    )


@given(st.text(max_size=60))
def test_what_is_served_is_always_a_safe_header_value(stored: str) -> None:
    served = served_type(stored)
    assert served.content_type.isascii() and served.content_type.isprintable()
    main = served.content_type.partition("/")[0]
    assert main in {"audio", "video", "application"}
    assert served.attachment or not served.content_type.startswith(
        ("application/xml", "application/xhtml", "application/javascript")
    )
