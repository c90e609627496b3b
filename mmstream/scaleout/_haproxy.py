"""The HAProxy configuration that puts several mmstream nodes behind one address.

Pure text generation, no I/O: the same nodes and options always give the same bytes, so the
committed ``conf/haproxy.cfg`` can be checked against it. Every choice below was checked with
HAProxy 2.6 (Debian 12); the comments written into the file say why each line is there,
because whoever edits the generated file by hand needs that more than we do.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
from attrs import validators as v

from ..errors import InvalidArgumentError

__all__ = [
    "DEFAULT_BIND",
    "DEFAULT_NODES",
    "BalancerOptions",
    "Endpoint",
    "Node",
    "format_duration",
    "max_maxconn",
    "parse_duration",
    "parse_endpoint",
    "parse_nodes",
    "render_haproxy_config",
]

#: HAProxy accepts these hostnames, IPv4 and IPv6 literals; anything else (spaces, quotes,
#: '#') would silently change the meaning of the generated line.
_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")


def _int_in(low: int, high: int) -> Any:
    """An attrs validator raising our error (the CLI turns it into one line)."""

    def check(_: object, attribute: attrs.Attribute[int], value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise InvalidArgumentError(f"{attribute.name}: expected {low}..{high}, got {value!r}")

    return check


def _check_host(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if _HOST_RE.match(value):
        return
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        raise InvalidArgumentError(
            f"{attribute.name}: not a host name or address: {value!r}"
        ) from None


@attrs.frozen
class Endpoint:
    """A host and TCP port; IPv6 literals are kept without brackets and bracketed on output."""

    host: str = attrs.field(validator=_check_host)
    port: int = attrs.field(validator=_int_in(1, 65535))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@attrs.frozen
class Node:
    """One mmstream process behind the balancer.

    ``index`` is the node's permanent number: HAProxy places a server on the hash ring by
    its numeric id (``id index+1``), not by its position in the file, so a node keeps its
    streams when others are added or removed around it as long as its index stays.
    """

    index: int = attrs.field(validator=_int_in(0, 9999))
    endpoint: Endpoint

    @property
    def name(self) -> str:
        return f"node-{self.index}"


DEFAULT_BIND = Endpoint("127.0.0.1", 8080)
DEFAULT_NODES: tuple[Node, ...] = tuple(Node(i, Endpoint("127.0.0.1", 9001 + i)) for i in range(3))


def _check_nodes(_: object, __: object, nodes: tuple[Node, ...]) -> None:
    if not nodes:
        raise InvalidArgumentError("nodes: at least one node is needed")
    for what, keys in (
        ("index", [n.index for n in nodes]),
        ("address", [str(n.endpoint) for n in nodes]),
    ):
        seen: set[object] = set()
        for key in keys:
            if key in seen:
                raise InvalidArgumentError(f"nodes: {what} {key} appears twice")
            seen.add(key)


def _check_path(_: object, attribute: attrs.Attribute[Path], value: Path) -> None:
    # A space or '#' would end the word early and HAProxy would read the rest as options.
    if not isinstance(value, Path) or re.search(r"[\s#\\'\"]", str(value)):
        raise InvalidArgumentError(f"{attribute.name}: unusable in an HAProxy config: {value}")


def _check_health_path(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not re.fullmatch(r"/[!-~]*", value) or "#" in value:
        raise InvalidArgumentError(f"{attribute.name}: expected a URL path, got {value!r}")


def _positive_duration(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise InvalidArgumentError(f"{attribute.name}: must be positive, got {value!r}")


@attrs.frozen
class BalancerOptions:
    """What may differ between deployments; the defaults are the configuration that was
    checked. Durations are seconds."""

    bind: Endpoint = DEFAULT_BIND
    #: Health check period; a node is marked down after ``fall`` failed checks in a row,
    #: so a dead node leaves the ring within ``check_interval * fall`` (+ one check timeout).
    check_interval: float = attrs.field(default=1.0, validator=_positive_duration)
    fall: int = attrs.field(default=2, validator=_int_in(1, 100))
    rise: int = attrs.field(default=2, validator=_int_in(1, 100))
    #: Each proxied connection holds two descriptors (client and server side), so this must
    #: stay under half the fd limit HAProxy runs with; see :func:`max_maxconn`.
    maxconn: int = attrs.field(default=4000, validator=_int_in(1, 1_000_000))
    #: An idle upgraded WebSocket is closed after this; keep it above the ping interval.
    tunnel_timeout: float = attrs.field(default=3600.0, validator=_positive_duration)
    connect_timeout: float = attrs.field(default=2.0, validator=_positive_duration)
    #: Retries of a failed connect; with ``redispatch`` each retry may pick another node,
    #: which turns "owner just died" into a 0.4 s detour instead of a 3.4 s 503.
    retries: int = attrs.field(default=2, validator=_int_in(0, 10))
    redispatch: bool = True
    health_path: str = attrs.field(default="/healthz", validator=_check_health_path)
    #: A UNIX socket (mode 600, admin level) for `show stat` and for draining a node with
    #: `set server mmstream_nodes/node-N state drain` before removing it.
    stats_socket: Path | None = attrs.field(default=None, validator=v.optional(_check_path))
    #: Send HAProxy's notices (a node marked DOWN/UP) to stderr; per-request lines are
    #: info level and stay off.
    log_to_stderr: bool = False
    #: Send live listeners (a plain ``GET /streams/{id}``: no ``Range``, no query) to the
    #: least-loaded node, which relays the stream from its owner (the nodes need
    #: ``cluster.peers``; docs/scaling.md, "Relays"). Everything else still goes by id.
    relay_listeners: bool = False
    #: Where Icecast sources (``PUT``/``SOURCE``) connect, in TCP mode: ffmpeg's icecast
    #: output, like legacy ``SOURCE`` clients, sends a body with neither ``Content-Length``
    #: nor chunking, which HTTP mode reads as no body at all (docs/scaling.md, "Sources").
    source_bind: Endpoint | None = None


#: The stream id of ``/v1/streams/{id}`` and ``/streams/{id}``, for ``balance hash``: one
#: expression for both backends, so a source and the readers of its stream share a node.
#: The query string is ignored; url_dec after the split: servers decode %XX in the id once,
#: so must the hash.
_ID_HASH = "path,regsub(^/v1/,/),field(3,/),url_dec"
#: Icecast's ``/admin/metadata`` names its stream in ``mount=/streams/{id}`` (the leading
#: ``/`` optional), not in its path; source programs send it to the port they push to.
#: The query is decoded once, as the server decodes it, so the id is the same one.
_MOUNT_ID = "url_param(mount),url_dec,regsub(^/*,/),field(3,/)"
_HASHED = "var(txn.stream_id)"


def _hash_lines(rule: str) -> list[str]:
    """The id a backend hashes: ``rule`` is ``http-request`` (HTTP mode) or
    ``tcp-request content`` (TCP mode, where the frontend has inspected the head)."""
    return [
        "    # Hash only the {id} of /v1/streams/{id} and /streams/{id}, so a stream's upload,",
        "    # its readers and its HTTP playback meet on one node; /admin/metadata (titles)",
        "    # goes by the id in its mount. The query string is ignored; url_dec after the",
        "    # split: servers decode %XX in the id once, so must the hash.",
        f"    {rule} set-var(txn.stream_id) {_ID_HASH}",
        f"    {rule} set-var(txn.stream_id) {_MOUNT_ID} if {{ path /admin/metadata }}",
        f"    balance hash {_HASHED}",
    ]


@attrs.frozen
class BalancerNodes:
    """Validated node list (non-empty, unique indexes and addresses)."""

    nodes: tuple[Node, ...] = attrs.field(validator=_check_nodes)


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``"1s"``, ``"500ms"``, ``"1h"`` or a bare number of seconds → seconds (HAProxy's
    units, so a value copied from a config file means the same here)."""
    match = _DURATION_RE.match(text)
    if not match:
        raise InvalidArgumentError(f"not a duration such as 1s, 500ms or 1h: {text!r}")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    if seconds <= 0:
        raise InvalidArgumentError(f"a duration must be positive: {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds → the shortest exact HAProxy time string (``1h``, ``30s``, ``250ms``)."""
    ms = round(seconds * 1000)
    if ms <= 0:
        raise InvalidArgumentError(f"duration too small for HAProxy (1 ms minimum): {seconds}")
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def parse_endpoint(text: str) -> Endpoint:
    """``host:port`` or ``[v6addr]:port``."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InvalidArgumentError(f"expected host:port, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return Endpoint(host, int(port))


def parse_nodes(text: str | Iterable[str]) -> tuple[Node, ...]:
    """``"h1:9001,h2:9001"`` → nodes numbered by position; ``"0=h1:9001,2=h3:9001"`` keeps
    explicit numbers, which is how a node is removed without moving the others' streams."""
    items = text.split(",") if isinstance(text, str) else list(text)
    nodes = []
    for position, item in enumerate(items):
        number, sep, address = item.strip().rpartition("=")
        if sep and not number.isdigit():
            raise InvalidArgumentError(f"expected [index=]host:port, got {item.strip()!r}")
        index = int(number) if sep else position
        nodes.append(Node(index, parse_endpoint(address)))
    return BalancerNodes(tuple(nodes)).nodes


def max_maxconn(fd_limit: int) -> int:
    """The largest ``maxconn`` HAProxy can honour under ``fd_limit`` descriptors: two per
    proxied connection plus a reserve for listeners, health checks and logs (10000 failed
    under a 20000 limit on the machine this was checked on)."""
    return max(1, (fd_limit - 200) // 2)


def render_haproxy_config(
    nodes: Sequence[Node] = DEFAULT_NODES, options: BalancerOptions | None = None
) -> str:
    """The full configuration file for ``nodes`` behind ``options.bind``."""
    opts = options or BalancerOptions()
    nodes = BalancerNodes(tuple(nodes)).nodes
    d = format_duration
    lines = [
        "# HAProxy 2.6+ in front of mmstream nodes, generated by `mmstream haproxy-config`.",
        "# Each stream is owned by one node, chosen by consistent hashing of its id.",
        "global",
        "    # Two descriptors per proxied connection: stay under half of HAProxy's fd limit.",
        f"    maxconn {opts.maxconn}",
    ]
    if opts.stats_socket is not None:
        lines.append(f"    stats socket {opts.stats_socket} mode 600 level admin")
    if opts.log_to_stderr:
        lines += [
            "    # Notices only: a node marked DOWN or UP.",
            "    log stderr format short local0 notice",
        ]
    lines += [
        "",
        "defaults",
        "    mode http",
        *(["    log global"] if opts.log_to_stderr else []),
        f"    timeout connect {d(opts.connect_timeout)}",
        "    timeout client 30s",
        "    timeout server 30s",
        "    timeout http-request 10s",
        "    # Upgraded WebSockets; keep it above the clients' ping interval.",
        f"    timeout tunnel {d(opts.tunnel_timeout)}",
        "    timeout client-fin 5s",
        "    timeout server-fin 5s",
        f"    retries {opts.retries}",
    ]
    if opts.redispatch:
        lines += [
            "    # A connect to a dead owner is retried on another node.",
            "    option redispatch 1",
        ]
    lines += [
        "",
        "frontend mmstream",
        f"    bind {opts.bind}",
        "    # Nodes see the client's address in X-Forwarded-For.",
        "    option forwardfor",
    ]
    if opts.relay_listeners:
        lines += [
            "    # Live listeners (GET /streams/{id}, no Range, no query but a capability) to",
            "    # the least-loaded node: it relays the stream from its owner (cluster.peers).",
            "    # A node holding no live copy anywhere redirects to /streams/{id}?owner,",
            "    # which goes by id.",
            "    acl listen_get method GET",
            "    acl listen_path path_reg ^/streams/[^/]+$",
            "    acl ranged req.hdr(range) -m found",
            "    acl queried query -m found",
            "    acl access_only query -m reg ^exp=[0-9]+&sig=[A-Za-z0-9_-]+$",
            "    use_backend mmstream_listeners if listen_get listen_path !ranged !queried",
            "    use_backend mmstream_listeners if listen_get listen_path !ranged access_only",
        ]
    lines += [
        "    default_backend mmstream_nodes",
        "",
        "backend mmstream_nodes",
        *_hash_lines("http-request"),
        "    hash-type consistent sdbm avalanche",
        "    # No hash-balance-factor: it moves ids off a busy owner, which splits streams.",
        "    # Every response names the node that answered.",
        "    http-response set-header X-Mmstream-Node %s",
        "    option httpchk",
        f"    http-check send meth GET uri {opts.health_path} ver HTTP/1.1 hdr Host localhost",
        "    http-check expect status 200",
        f"    default-server inter {d(opts.check_interval)} fall {opts.fall} rise {opts.rise}"
        " on-marked-down shutdown-sessions",
        "    # A server's id fixes its place on the hash ring: a node keeps its number for good.",
    ]
    lines += [f"    server {n.name} {n.endpoint} id {n.index + 1} check" for n in nodes]
    if opts.relay_listeners:
        lines += [
            "",
            "backend mmstream_listeners",
            "    # The node with the fewest connections; each serves its listeners from one relay.",
            "    balance leastconn",
            "    http-response set-header X-Mmstream-Node %s",
            "    # Up and down with the same node in mmstream_nodes: one health check per node.",
        ]
        lines += [f"    server {n.name} {n.endpoint} track mmstream_nodes/{n.name}" for n in nodes]
    if opts.source_bind is not None:
        lines += _source_sections(nodes, opts.source_bind)
    return "\n".join(lines) + "\n"


def _source_sections(nodes: Sequence[Node], bind: Endpoint) -> list[str]:
    """A TCP frontend and backend for Icecast sources. HTTP/1.1 has no request body of
    unknown length, so HTTP mode forwards such a request's head (and the node's
    ``100 Continue``) and then waits for the next request: the body never reaches the node.
    In TCP mode the connection is the body; the request's head is parsed only to hash the
    id onto the same ring as ``mmstream_nodes`` (same ids, same hash, same expression)."""
    lines = [
        "",
        "frontend mmstream_sources",
        "    # Icecast sources (PUT or SOURCE, then raw bytes until close): HTTP mode reads a",
        "    # request with neither Content-Length nor chunking as bodiless and drops the rest.",
        "    mode tcp",
        f"    bind {bind}",
        "    # Wait for the request's head, which the backend hashes on; anything else is",
        "    # refused.",
        "    tcp-request inspect-delay 10s",
        "    tcp-request content accept if HTTP",
        "    tcp-request content reject",
        "    default_backend mmstream_sources",
        "",
        "backend mmstream_sources",
        "    mode tcp",
        "    # The ring of mmstream_nodes: a source lands on the node its listeners read from.",
        *_hash_lines("tcp-request content"),
        "    hash-type consistent sdbm avalanche",
        "    # Up and down with the same node in mmstream_nodes: one health check per node.",
    ]
    lines += [
        f"    server {n.name} {n.endpoint} id {n.index + 1} track mmstream_nodes/{n.name}"
        for n in nodes
    ]
    return lines
