"""The page's files are packaged and found; nothing else is."""

from __future__ import annotations

import pytest

from mmstream.web.assets import find_asset


def test_the_page_and_its_files() -> None:
    page = find_asset("/")
    assert page is not None and page.content_type == "text/html; charset=utf-8"
    assert b'src="/static/app.js"' in page.body and b'href="/static/style.css"' in page.body
    assert find_asset("/index.html") == page
    script = find_asset("/static/app.js")
    assert script is not None and script.content_type.startswith("text/javascript")
    for needle in (b"MediaRecorder", b"audio/webm;codecs=opus", b"MediaSource", b'"tail"'):
        assert needle in script.body
    style = find_asset("/static/style.css")
    assert style is not None and style.content_type.startswith("text/css")
    assert page.etag != script.etag and page.etag.startswith('"')


@pytest.mark.parametrize(
    "path",
    [
        "/static/",
        "/static/../__init__.py",
        "/static/..%2fassets.py",
        "/static/sub/app.js",
        "/static/.hidden.js",
        "/static/missing.js",
        "/static/app.py",
        "/app.js",
        "/static",
        "/static/\\app.js",
        "",
    ],
)
def test_nothing_else(path: str) -> None:
    assert find_asset(path) is None
