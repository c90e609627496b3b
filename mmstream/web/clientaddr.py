"""Who the client is behind a trusted proxy: PROXY protocol v1 and ``X-Forwarded-For``.

Behind HAProxy or nginx every connection comes from the proxy; the client's address is in
the PROXY protocol line the proxy sends first (HAProxy's ``send-proxy``) or in the
``X-Forwarded-For`` header it adds. Either is believed only from a proxy listed in
``server.trusted_proxies`` (addresses or networks): anyone else could claim any address.
The address found is the one logs, ``listclients``, listener hooks and (with the PROXY
protocol) the per-address connection cap use.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = [
    "MAX_PROXY_LINE",
    "TrustedProxies",
    "forwarded_client",
    "forwarded_for",
    "host_of",
    "parse_proxy_v1",
]

#: The longest PROXY v1 line, CRLF included (the HAProxy specification's 107).
MAX_PROXY_LINE = 107
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The addresses and networks whose forwarding information is believed."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self._networks: list[_Network] = [ipaddress.ip_network(e, strict=False) for e in entries]

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __contains__(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)


def host_of(remote: str) -> str:
    """The address part of ``host:port`` or ``[v6]:port`` (as the front door names peers)."""
    if remote.startswith("["):
        return remote[1:].partition("]")[0]
    host, colon, port = remote.rpartition(":")
    return host if colon and port.isdigit() and ":" not in host else remote


def parse_proxy_v1(line: bytes) -> tuple[str, int] | None:
    """The client's address and port from a PROXY v1 line (CRLF included); None for
    ``PROXY UNKNOWN`` (the proxy's own health checks: use the peer). Raises ValueError for
    anything malformed."""
    if len(line) > MAX_PROXY_LINE or not line.startswith(b"PROXY ") or not line.endswith(b"\r\n"):
        raise ValueError("not a PROXY protocol v1 line")
    fields = line[:-2].decode("ascii").split(" ")
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        return None
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ValueError(f"malformed PROXY line: {line[:60]!r}")
    source = ipaddress.ip_address(fields[2])
    if source.version != (4 if fields[1] == "TCP4" else 6):
        raise ValueError("PROXY line: the address does not match its family")
    port = int(fields[4])
    if not 0 <= port <= 65535 or not fields[4].isdigit():
        raise ValueError("PROXY line: bad source port")
    return str(source), port


def forwarded_client(
    peer: str, headers: Iterable[tuple[bytes, bytes]], trusted: TrustedProxies
) -> str:
    """:func:`forwarded_for` over a request's raw headers (every ``X-Forwarded-For`` field,
    in order, as one list)."""
    values = [value.decode("latin-1") for name, value in headers if name == b"x-forwarded-for"]
    return forwarded_for(peer, ", ".join(values) or None, trusted)


def forwarded_for(peer: str, header: str | None, trusted: TrustedProxies) -> str:
    """The client's address: ``peer`` unless it is a trusted proxy that sent
    ``X-Forwarded-For``; then the rightmost address there that is not a trusted proxy (the
    ones left of it could have been written by the client itself). A malformed entry stops
    the walk at the last trusted hop."""
    if not header or peer not in trusted:
        return peer
    client = peer
    for entry in reversed(header.split(",")):
        candidate = entry.strip()
        try:
            candidate = str(ipaddress.ip_address(candidate.strip("[]")))
        except ValueError:
            return client
        client = candidate
        if candidate not in trusted:
            return candidate
    return client
