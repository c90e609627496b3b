"""Client addresses behind trusted proxies (no sockets)."""

from __future__ import annotations

import pytest

from mmstream.web.clientaddr import TrustedProxies, forwarded_for, host_of, parse_proxy_v1

TRUSTED = TrustedProxies(["10.0.0.0/8", "127.0.0.1", "::1"])


def test_trusted_proxies_are_addresses_and_networks() -> None:
    assert "10.1.2.3" in TRUSTED and "127.0.0.1" in TRUSTED and "::1" in TRUSTED
    assert "192.0.2.1" not in TRUSTED and "garbage" not in TRUSTED
    assert not TrustedProxies() and TRUSTED


def test_host_of_a_remote() -> None:
    assert host_of("127.0.0.1:5000") == "127.0.0.1"
    assert host_of("[::1]:5000") == "::1"
    assert host_of("?") == "?"


def test_proxy_v1_lines() -> None:
    assert parse_proxy_v1(b"PROXY TCP4 192.0.2.1 10.0.0.1 56324 443\r\n") == ("192.0.2.1", 56324)
    assert parse_proxy_v1(b"PROXY TCP6 2001:db8::1 ::1 4000 80\r\n") == ("2001:db8::1", 4000)
    assert parse_proxy_v1(b"PROXY UNKNOWN\r\n") is None
    assert parse_proxy_v1(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n") is None


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 192.0.2.1 10.0.0.1 56324\r\n",
        b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",  # family mismatch
        b"PROXY TCP4 999.0.2.1 10.0.0.1 1 2\r\n",
        b"PROXY TCP4 192.0.2.1 10.0.0.1 70000 2\r\n",
        b"PROXY TCP4 192.0.2.1 10.0.0.1 -1 2\r\n",
        b"PROXY UDP4 192.0.2.1 10.0.0.1 1 2\r\n",
        b"GET / HTTP/1.1\r\n",
        b"PROXY TCP4 192.0.2.1 10.0.0.1 1 2\n",
        b"PROXY " + b"1" * 200 + b"\r\n",
        b"PROXY TCP4 \xff 10.0.0.1 1 2\r\n",
    ],
)
def test_malformed_proxy_lines_are_refused(line: bytes) -> None:
    with pytest.raises(ValueError):
        parse_proxy_v1(line)


def test_x_forwarded_for_only_from_trusted_proxies() -> None:
    assert forwarded_for("192.0.2.9", "198.51.100.1", TRUSTED) == "192.0.2.9"
    assert forwarded_for("10.0.0.5", "198.51.100.1", TRUSTED) == "198.51.100.1"
    assert forwarded_for("10.0.0.5", None, TRUSTED) == "10.0.0.5"
    assert forwarded_for("10.0.0.5", "198.51.100.1", TrustedProxies()) == "10.0.0.5"


def test_x_forwarded_for_takes_the_rightmost_untrusted_hop() -> None:
    # The client wrote "1.2.3.4" itself; the trusted proxies appended the rest.
    assert forwarded_for("10.0.0.5", "1.2.3.4, 198.51.100.1, 10.0.0.7", TRUSTED) == "198.51.100.1"
    assert forwarded_for("10.0.0.5", "10.0.0.8, 10.0.0.7", TRUSTED) == "10.0.0.8"
    assert forwarded_for("10.0.0.5", "198.51.100.1, evil", TRUSTED) == "10.0.0.5"
    assert forwarded_for("10.0.0.5", "2001:db8::1", TRUSTED) == "2001:db8::1"
