"""The HAProxy config generator: the committed example, node parsing, and HAProxy's own check."""

from __future__ import annotations

import subprocess
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scaleout_helpers import HAPROXY, needs_haproxy

from mmstream.cli import main
from mmstream.errors import InvalidArgumentError
from mmstream.scaleout import (
    DEFAULT_NODES,
    BalancerOptions,
    Endpoint,
    Node,
    format_duration,
    max_maxconn,
    parse_duration,
    parse_endpoint,
    parse_nodes,
    render_haproxy_config,
)

REPO = Path(__file__).resolve().parents[2]


def test_committed_example_is_the_generators_output() -> None:
    committed = (REPO / "conf" / "haproxy.cfg").read_text()
    assert committed == render_haproxy_config(), (
        "regenerate: mmstream haproxy-config -o conf/haproxy.cfg"
    )


def test_config_hashes_the_id_segment_and_checks_health() -> None:
    text = render_haproxy_config()
    id_rule = "set-var(txn.stream_id) path,regsub(^/v1/,/),field(3,/),url_dec"
    assert f"http-request {id_rule}" in text
    # Titles (/admin/metadata?mount=/streams/{id}) go to the id's owner too.
    mount_rule = "set-var(txn.stream_id) url_param(mount),url_dec,regsub(^/*,/),field(3,/)"
    assert f"http-request {mount_rule} if {{ path /admin/metadata }}" in text
    assert "balance hash var(txn.stream_id)" in text
    assert "hash-type consistent" in text
    assert "hash-balance-factor" not in text.replace("No hash-balance-factor", "")
    assert "http-check send meth GET uri /healthz" in text
    assert "option redispatch 1" in text
    assert "timeout tunnel 1h" in text
    assert "default-server inter 1s fall 2 rise 2" in text
    for node in DEFAULT_NODES:
        assert f"server {node.name} {node.endpoint} id {node.index + 1} check" in text


def test_options_reach_the_text() -> None:
    options = BalancerOptions(
        bind=Endpoint("0.0.0.0", 80),
        check_interval=0.25,
        fall=3,
        rise=1,
        maxconn=100,
        tunnel_timeout=90,
        retries=0,
        redispatch=False,
        stats_socket=Path("/run/mm.sock"),
        log_to_stderr=True,
    )
    text = render_haproxy_config(DEFAULT_NODES[:1], options)
    assert "bind 0.0.0.0:80" in text
    assert "default-server inter 250ms fall 3 rise 1" in text
    assert "maxconn 100\n" in text
    assert "timeout tunnel 90s" in text
    assert "retries 0" in text
    assert "redispatch" not in text.replace("# A connect", "")
    assert "stats socket /run/mm.sock" in text
    assert "log stderr" in text
    assert text.count("    server ") == 1


def test_relay_listeners_go_to_the_least_loaded_node_and_the_rest_by_id() -> None:
    plain = render_haproxy_config(DEFAULT_NODES)
    assert "mmstream_listeners" not in plain
    text = render_haproxy_config(DEFAULT_NODES, BalancerOptions(relay_listeners=True))
    assert "use_backend mmstream_listeners if listen_get listen_path !ranged !queried" in text
    assert "use_backend mmstream_listeners if listen_get listen_path !ranged access_only" in text
    listeners = text.split("backend mmstream_listeners", 1)[1]
    assert "balance leastconn" in listeners
    for node in DEFAULT_NODES:
        assert f"server {node.name} {node.endpoint} track mmstream_nodes/{node.name}" in listeners


def test_parse_nodes_numbers_by_position_or_explicitly() -> None:
    assert parse_nodes("a:1,b:2") == (Node(0, Endpoint("a", 1)), Node(1, Endpoint("b", 2)))
    removed_middle = parse_nodes("0=h1:9001, 2=h3:9001")
    assert [n.name for n in removed_middle] == ["node-0", "node-2"]
    assert parse_nodes(["[::1]:9001"]) == (Node(0, Endpoint("::1", 9001)),)
    assert str(Endpoint("::1", 9001)) == "[::1]:9001"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "host",
        "host:",
        ":80",
        "host:0",
        "host:65536",
        "host:-1",
        "a b:80",
        "h#x:80",
        "x=h:80",
        "-1=h:80",
        "a:1,a:1",
        "0=a:1,0=b:1",
        "h:80,,h:81",
        "h:8o",
        "ünï:80",
    ],
)
def test_bad_nodes_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgumentError):
        parse_nodes(text)


def test_parse_endpoint_rejects_garbage() -> None:
    with pytest.raises(InvalidArgumentError):
        parse_endpoint("[::1:80")


@pytest.mark.parametrize(
    ("text", "seconds"), [("1s", 1.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), ("3", 3.0)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0s", "-1s", "1 week", "1e3", "s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(InvalidArgumentError):
        parse_duration(text)


@given(st.integers(min_value=1, max_value=10**9))
def test_format_duration_round_trips_milliseconds(ms: int) -> None:
    assert round(parse_duration(format_duration(ms / 1000)) * 1000) == ms


def test_bad_options_are_refused() -> None:
    with pytest.raises(InvalidArgumentError):
        BalancerOptions(stats_socket=Path("/tmp/a b.sock"))
    with pytest.raises(InvalidArgumentError):
        BalancerOptions(check_interval=0)
    with pytest.raises(InvalidArgumentError):
        format_duration(0.0001)


def test_maxconn_fits_the_fd_limit() -> None:
    # 10000 failed under a limit of 20000; 4000 worked.
    assert 4000 <= max_maxconn(20000) < 10000


def test_sources_go_by_id_in_tcp_mode_on_the_same_ring() -> None:
    """ffmpeg's unframed PUT has no body in HTTP mode (test_haproxy_sources.py), so sources
    get a TCP frontend; its backend must place an id where mmstream_nodes does."""
    assert "mmstream_sources" not in render_haproxy_config(DEFAULT_NODES)
    source = Endpoint("0.0.0.0", 8000)
    text = render_haproxy_config(DEFAULT_NODES, BalancerOptions(source_bind=source))
    nodes = text.split("\nbackend mmstream_nodes\n", 1)[1].split("\n\n", 1)[0]
    sources = text.split("\nfrontend mmstream_sources\n", 1)[1]
    frontend, backend = sources.split("\nbackend mmstream_sources\n", 1)
    assert "mode tcp" in frontend and f"bind {source}" in frontend
    assert "tcp-request content accept if HTTP" in frontend
    assert "mode tcp" in backend
    for line in ("balance hash ", "hash-type "):
        (ring,) = [x for x in nodes.splitlines() if x.strip().startswith(line)]
        assert ring in backend.splitlines()
    # The same id, set by the same expressions, TCP mode's rule instead of HTTP's.
    rules = [x for x in nodes.splitlines() if "set-var(txn.stream_id)" in x]
    assert len(rules) == 2
    for rule in rules:
        assert rule.replace("http-request", "tcp-request content") in backend.splitlines()
    for node in DEFAULT_NODES:
        server = f"server {node.name} {node.endpoint} id {node.index + 1}"
        assert f"{server} track mmstream_nodes/{node.name}" in backend


def test_cli_prints_the_same_text(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["haproxy-config"]) == 0
    assert capsys.readouterr().out == render_haproxy_config()
    out = tmp_path / "h.cfg"
    argv = ["haproxy-config", "--nodes", "10.0.0.1:9001,10.0.0.2:9001", "--bind", "0.0.0.0:80"]
    assert (
        main([*argv, "--check-interval", "2s", "--source-bind", "0.0.0.0:8000", "-o", str(out)])
        == 0
    )
    expected = render_haproxy_config(
        parse_nodes("10.0.0.1:9001,10.0.0.2:9001"),
        BalancerOptions(
            bind=Endpoint("0.0.0.0", 80), check_interval=2.0, source_bind=Endpoint("0.0.0.0", 8000)
        ),
    )
    assert out.read_text() == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["--nodes", "nope"],
        ["--bind", "localhost"],
        ["--check-interval", "soon"],
        ["--fall", "0"],
        ["--stats-socket", "/tmp/a b"],
        ["--source-bind", "8000"],
    ],
)
def test_cli_bad_input_is_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["haproxy-config", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmstream: error: ") and err.count("\n") == 1


@needs_haproxy
@pytest.mark.parametrize(
    "nodes",
    [
        DEFAULT_NODES,
        parse_nodes("0=10.0.0.1:9001,5=[::1]:9002"),
        parse_nodes(",".join(f"127.0.0.1:{9001 + i}" for i in range(16))),
    ],
)
@pytest.mark.parametrize(
    "options",
    [
        BalancerOptions(),
        BalancerOptions(
            check_interval=0.2, redispatch=False, retries=0, log_to_stderr=True, maxconn=500
        ),
        BalancerOptions(relay_listeners=True),
        BalancerOptions(relay_listeners=True, source_bind=Endpoint("::1", 8000)),
    ],
)
def test_haproxy_accepts_generated_configs(
    nodes: tuple[Node, ...], options: BalancerOptions, tmp_path: Path
) -> None:
    assert HAPROXY is not None
    options = attrs.evolve(options, stats_socket=tmp_path / "stats.sock")
    path = tmp_path / "haproxy.cfg"
    path.write_text(render_haproxy_config(nodes, options))
    result = subprocess.run(
        [HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_haproxy
def test_haproxy_accepts_the_committed_example() -> None:
    assert HAPROXY is not None
    result = subprocess.run(
        [HAPROXY, "-c", "-f", str(REPO / "conf" / "haproxy.cfg")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
