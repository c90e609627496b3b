"""CORS decisions for browser players (no sockets)."""

from __future__ import annotations

from mmstream.web.cors import cors_headers, preflight

SITE = "https://player.example"


def test_off_without_origins_or_origin() -> None:
    assert cors_headers(SITE, ()) == []
    assert cors_headers(None, ("*",)) == []
    assert preflight(SITE, "GET", None, ()) is None


def test_a_listed_origin_is_echoed_with_vary_and_icy_headers_exposed() -> None:
    headers = dict(cors_headers(SITE, ("https://other.example", SITE)))
    assert headers["access-control-allow-origin"] == SITE
    assert headers["vary"] == "origin"
    assert "icy-metaint" in headers["access-control-expose-headers"]
    assert "icy-name" in headers["access-control-expose-headers"]
    assert "access-control-allow-credentials" not in headers
    assert cors_headers("https://evil.example", (SITE,)) == []


def test_a_player_on_another_site_reads_where_a_seek_starts_and_the_capability() -> None:
    """A page elsewhere that seeks (``HEAD ?t=``) or holds a token needs
    ``X-Mmstream-Time`` and ``X-Mmstream-Capability`` (regression: not exposed, so
    ``fetch`` saw neither)."""
    exposed = dict(cors_headers(SITE, (SITE,)))["access-control-expose-headers"].split(", ")
    assert {"x-mmstream-time", "x-mmstream-offset", "x-mmstream-capability"} <= set(exposed)


def test_any_origin() -> None:
    assert dict(cors_headers("https://a.example", ("*",)))["access-control-allow-origin"] == "*"


def test_preflight_allows_get_with_icy_metadata_and_range_only() -> None:
    answer = preflight(SITE, "GET", "Icy-MetaData, Range", (SITE,))
    assert answer is not None
    headers = dict(answer)
    assert headers["access-control-allow-methods"] == "GET, HEAD, OPTIONS"
    assert "icy-metadata" in headers["access-control-allow-headers"]
    assert preflight(SITE, "PUT", None, (SITE,)) is None  # no cross-origin uploads
    assert preflight(SITE, "DELETE", None, ("*",)) is None
    assert preflight(SITE, "GET", "x-evil", (SITE,)) is None
    assert preflight("https://evil.example", "GET", None, (SITE,)) is None
