"""Signed read capabilities for HLS (mmstream/capability.py), without I/O: minting and
checking, hostile and malformed ones, and a playlist's URIs decorated. Over a real server:
tests/media/test_hls_auth.py."""

from __future__ import annotations

import pytest

from mmstream.capability import (
    EXPIRY_GRANULE,
    Capabilities,
    Refusal,
    asks_beyond_access,
    capability_in_query,
    decorate_playlist,
)

KEY = "a-capability-key-of-32-characters-or-more"


def test_a_capability_names_one_stream_generation_until_it_expires() -> None:
    caps = Capabilities(KEY.encode())
    query = caps.mint("show", "0123456789abcdef", now=1000.0, lifetime=3600)
    found = capability_in_query(f"_HLS_msn=3&{query}")
    assert isinstance(found, tuple)
    exp = int(found[0])
    assert exp % EXPIRY_GRANULE == 0 and 4600 <= exp < 4600 + EXPIRY_GRANULE
    assert caps.check(found, "show", "0123456789abcdef", now=4599.0) == query
    expired = caps.check(found, "show", "0123456789abcdef", now=float(exp))
    assert isinstance(expired, Refusal) and expired.status == 401 and "expired" in expired.reason
    for stream, generation in (("other", "0123456789abcdef"), ("show", "fedcba9876543210"),
                               ("show", None)):  # fmt: skip
        refused = caps.check(found, stream, generation, now=1000.0)
        assert refused == Refusal(403, "forbidden: the capability is not for this stream")
    # Another key (another server, or a guess) signs something else.
    assert isinstance(Capabilities(b"x" * 32).check(found, "show", "0123456789abcdef",
                                                    now=1000.0), Refusal)  # fmt: skip
    # A later expiry under the same signature is a forgery, not a renewal.
    later = (str(exp + EXPIRY_GRANULE), found[1])
    assert caps.check(later, "show", "0123456789abcdef", now=1000.0) == Refusal(
        403, "forbidden: the capability is not for this stream"
    )


def test_listeners_of_the_same_minute_get_the_same_uris() -> None:
    """Rounded expiries: a cache in front keys on the URI, so it must not vary per request."""
    caps = Capabilities(KEY.encode())
    first = caps.mint("show", "0123456789abcdef", now=6001.0, lifetime=3600)
    assert caps.mint("show", "0123456789abcdef", now=6059.0, lifetime=3600) == first
    assert Capabilities().mint("show", "0123456789abcdef", now=6000.0, lifetime=1) != first


@pytest.mark.parametrize(
    "query",
    ["exp=123", "sig=" + "a" * 22, "exp=12x&sig=" + "a" * 22, "exp=123&sig=short",
     "exp=1&exp=2&sig=" + "a" * 22, "exp=1234567890123&sig=" + "a" * 22,
     "exp=123&sig=" + "a" * 21 + "%"],
)  # fmt: skip
def test_a_malformed_capability_is_refused_in_one_line(query: str) -> None:
    found = capability_in_query(query)
    assert isinstance(found, Refusal) and found.status == 403 and "\n" not in found.reason


def test_no_capability_is_none() -> None:
    assert capability_in_query("") is None
    assert capability_in_query("_HLS_msn=3&_HLS_part=1") is None


def test_every_uri_of_a_playlist_carries_the_capability() -> None:
    playlist = "\n".join([
        "#EXTM3U", '#EXT-X-MAP:URI="hls/init.mp4"', "#EXTINF:4.0,", "hls/a-0.aac",
        '#EXT-X-PART:DURATION=0.5,URI="hls/a-1.0.aac"',
        '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="hls/a-1.1.aac?x=1"', "",
    ])  # fmt: skip
    out = decorate_playlist(playlist, "exp=60&sig=s")
    assert out.splitlines() == [
        "#EXTM3U", '#EXT-X-MAP:URI="hls/init.mp4?exp=60&sig=s"', "#EXTINF:4.0,",
        "hls/a-0.aac?exp=60&sig=s", '#EXT-X-PART:DURATION=0.5,URI="hls/a-1.0.aac?exp=60&sig=s"',
        '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="hls/a-1.1.aac?x=1&exp=60&sig=s"',
    ]  # fmt: skip
    assert out.endswith("\n")
    assert decorate_playlist(playlist, "") == playlist


@pytest.mark.parametrize(
    ("query", "beyond"),
    [
        ("", False),
        ("exp=1800000000&sig=AAAAAAAAAAAAAAAAAAAAAA", False),
        ("sig=x&exp=1&", False),  # a malformed capability is refused, not routed elsewhere
        ("exp=1&sig=x&t=-2", True),
        ("offset=0", True),
        ("owner", True),
        ("exp=1&sig=x&=", True),  # an empty name asks for something unknown
        ("expx=1", True),
    ],
)
def test_a_query_asks_beyond_access_unless_it_is_only_a_capability(
    query: str, beyond: bool
) -> None:
    assert asks_beyond_access(query) is beyond
