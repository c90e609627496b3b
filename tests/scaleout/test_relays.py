"""One stream's live listeners spread over every node of a real cluster behind real HAProxy:
the owner takes the upload, the other nodes relay it (docs/scaling.md, "Relays")."""

from __future__ import annotations

import itertools
import os
import signal
from pathlib import Path

import httpx
import pytest
import trio
from ogg_pages import HEADER, page
from scaleout_helpers import (
    LocalCluster,
    needs_haproxy,
    open_local_cluster,
    served_by,
    wait_for_states,
)

from mmstream.client import Client, connect
from mmstream.icecast import split_icy
from mmstream.scaleout import Endpoint

pytestmark = [needs_haproxy, pytest.mark.slow]


class Listener:
    """A raw HTTP listener through the balancer: the node that answered and every byte."""

    def __init__(self, stream: trio.SocketStream, node: str, body: bytes) -> None:
        self.stream = stream
        self.node = node
        self.body = bytearray(body)
        self.closed = trio.Event()

    async def read_all(self) -> None:
        try:
            while piece := await self.stream.receive_some(65536):
                self.body += piece
        except trio.BrokenResourceError:
            pass
        self.closed.set()


async def listen(
    cluster: LocalCluster, stream_id: str, at: Endpoint | None = None, query: str = ""
) -> Listener:
    """A listener through the balancer, or straight to the node ``at`` (its ``node`` is
    then the endpoint: only HAProxy names nodes)."""
    at = at or cluster.balancer
    stream = await trio.open_tcp_stream(at.host, at.port)
    path = f"/streams/{stream_id}" + (f"?{query}" if query else "")
    await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        piece = await stream.receive_some(65536)
        assert piece, data
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].split()[1] == "200", head
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert headers["content-type"].startswith("audio/ogg"), headers
    return Listener(stream, headers.get("x-mmstream-node", str(at)), rest)


async def start_source(client: Client, stream_id: str, pages: int) -> bytes:
    await client.create(stream_id, content_type="audio/ogg")
    sent = HEADER + b"".join(page(i) for i in range(pages))
    await client.append(stream_id, sent)
    await client.sync(stream_id)
    return sent


async def play_to_the_end(
    client: Client, stream_id: str, stream: bytes, pages: range, listeners: list[Listener]
) -> bytes:
    """Upload ``pages`` in real time and finalize while ``listeners`` read everything;
    the whole stream sent."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(listener.read_all)
            for i in pages:
                await client.append(stream_id, page(i))
                stream += page(i)
                await trio.sleep(0.01)
            await client.finalize(stream_id)
    return stream


def check_body(listener: Listener, stream: bytes) -> int:
    """A listener got the header, then the stream from a page boundary on, byte for byte;
    returns where in the stream it started."""
    body = bytes(listener.body)
    assert body.startswith(HEADER), listener.node
    rest = body[len(HEADER) :]
    start = len(stream) - len(rest)
    assert start >= len(HEADER), (listener.node, start)
    assert stream[start:] == rest, listener.node
    assert rest.startswith(b"OggS"), listener.node
    return start


async def test_listeners_on_every_node_get_the_same_live_bytes(tmp_path: Path) -> None:
    async with open_local_cluster(tmp_path, 3, relays=True) as cluster:
        async with connect(cluster.url, stream="radio") as client:
            stream = await start_source(client, "radio", 20)
            listeners = [await listen(cluster, "radio") for _ in range(6)]
            # leastconn: each listener holds its connection, so they spread over the nodes.
            assert len({listener.node for listener in listeners}) == 3
            stream = await play_to_the_end(client, "radio", stream, range(20, 60), listeners)
        # Every listener, on the owner or on a relay, ends cleanly with every byte.
        starts = [check_body(listener, stream) for listener in listeners]
        assert max(starts) <= len(HEADER) + 20 * len(page(0))
        # A stream no node uploads (finished, or unknown): sent to its owner, by id.
        assert (await served_by(cluster.balancer, "/streams/nosuch"))[0] == 307
        assert (await served_by(cluster.balancer, "/streams/radio?owner"))[0] == 200
        assert (await served_by(cluster.balancer, "/streams/nosuch?owner"))[0] == 404


async def test_the_owners_loss_ends_the_relays_listeners_cleanly(tmp_path: Path) -> None:
    async with open_local_cluster(tmp_path, 3, relays=True) as cluster:
        async with connect(cluster.url, stream="radio") as client:
            stream = await start_source(client, "radio", 20)
        owner = cluster.holders("radio")
        assert len(owner) == 1
        listeners = [await listen(cluster, "radio") for _ in range(6)]
        relayed = [x for x in listeners if x.node != f"node-{owner[0]}"]
        assert len({x.node for x in relayed}) == 2
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for listener in relayed:
                    nursery.start_soon(listener.read_all)
                # The relays have the stream up to its edge (a kill before that, on a busy
                # machine, cut the burst short and the body no longer ended the stream).
                for _ in range(600):
                    if all(bytes(x.body).endswith(page(19)) for x in relayed):
                        break
                    await trio.sleep(0.05)
                pid = cluster.pid(owner[0])
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                for listener in relayed:
                    await listener.closed.wait()
        # The relays' listeners got the header and the stream from a page on, up to its
        # edge, then the end of the response: no garbage, no hang.
        for listener in relayed:
            assert check_body(listener, stream) > 0
        for listener in listeners:
            await listener.stream.aclose()


async def test_a_stream_live_on_its_owner_wins_over_a_fallback_held_elsewhere(
    tmp_path: Path,
) -> None:
    """``live-*`` falls back to ``jingles``; a listener of a live ``live-*`` that lands on
    the node holding ``jingles`` hears the live stream, relayed from its owner, and jingles
    once the live stream ends."""
    config = tmp_path / "mmstream.toml"
    config.write_text('[[icecast.fallback]]\npattern = "live-*"\nfallback = "jingles"\n')
    async with open_local_cluster(tmp_path, 3, relays=True, node_config=config) as cluster:
        async with connect(cluster.url, stream="jingles") as client:
            await client.create("jingles", content_type="audio/ogg")
            await client.append("jingles", HEADER + b"".join(page(i) for i in range(100, 110)))
            await client.sync("jingles")
        (holder,) = cluster.holders("jingles")
        jingles_node = f"node-{holder}"
        live = ""
        for i in range(100):  # an id HAProxy hashes to another node than jingles
            live = f"live-{i}"
            if (await served_by(cluster.balancer, f"/streams/{live}?owner"))[1] != jingles_node:
                break
        async with connect(cluster.url, stream=live) as client:
            await start_source(client, live, 20)
            listeners = [await listen(cluster, live) for _ in range(6)]
            assert jingles_node in {x.node for x in listeners}
            stream = HEADER + b"".join(page(i) for i in range(20))
            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    for listener in listeners:
                        nursery.start_soon(listener.read_all)
                    await client.finalize(live)
                    # Then every listener, wherever it is, hears jingles (held on one node,
                    # relayed by the others), without being disconnected.
                    for _ in range(600):
                        if all(has_page(x, 109) for x in listeners):
                            break
                        await trio.sleep(0.05)
                    assert not any(x.closed.is_set() for x in listeners)
                    nursery.cancel_scope.cancel()
        for listener in listeners:
            live_part, jingles_header, jingles = bytes(listener.body).partition(page(19) + HEADER)
            assert jingles_header and page(100 + 9) in jingles, listener.node
            listener.body = bytearray(live_part + page(19))
            check_body(listener, stream)
            await listener.stream.aclose()


def has_page(listener: Listener, i: int, after: int = 0) -> bool:
    return page(i) in bytes(listener.body[after:])


async def test_the_owners_loss_sends_the_relays_listeners_to_the_fallback_and_back(
    tmp_path: Path,
) -> None:
    """``live-*`` falls back to ``jingles``. Listeners of a live ``live-*`` on the two other
    nodes (one holds ``jingles``, one relays it too) hear jingles when the owner dies, and
    the live stream again once a source continues it on another node: never disconnected."""
    config = tmp_path / "mmstream.toml"
    config.write_text('[[icecast.fallback]]\npattern = "live-*"\nfallback = "jingles"\n')
    async with open_local_cluster(
        tmp_path, 3, relays=True, node_config=config, check_interval=0.2
    ) as cluster:
        async with connect(cluster.url, stream="jingles") as jingles:
            await jingles.create("jingles", content_type="audio/ogg")
            await jingles.append("jingles", HEADER + b"".join(page(i) for i in range(100, 110)))
            await jingles.sync("jingles")
            (holder,) = cluster.holders("jingles")
            live = ""
            for i in range(100):  # an id HAProxy hashes to another node than jingles
                live = f"live-{i}"
                owner = (await served_by(cluster.balancer, f"/streams/{live}?owner"))[1]
                if owner != f"node-{holder}":
                    break
            async with connect(cluster.url, stream=live) as client:
                await start_source(client, live, 20)
            (owner_index,) = cluster.holders(live)
            listeners = [await listen(cluster, live) for _ in range(6)]
            relayed = [x for x in listeners if x.node != f"node-{owner_index}"]
            assert len({x.node for x in relayed}) == 2
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for listener in relayed:
                        nursery.start_soon(listener.read_all)
                    pid = cluster.pid(owner_index)
                    assert pid is not None
                    os.kill(pid, signal.SIGKILL)
                    # Jingles goes on; every relay's listener comes to hear it (however
                    # long the look-ups take on a busy machine: fail_after bounds it).
                    for i in itertools.count(110):
                        await jingles.append("jingles", page(i))
                        await trio.sleep(0.02)
                        if all(has_page(x, i) for x in relayed):
                            break
                        assert not any(x.closed.is_set() for x in relayed)
                    # A source continues live-… on a node still up; its listeners return.
                    await wait_for_states(cluster, {f"node-{owner_index}": "DOWN"})
                    marks = [len(x.body) for x in relayed]
                    async with connect(cluster.url, stream=live) as client:
                        await client.create(live, content_type="audio/ogg")
                        await client.append(live, HEADER + page(200))
                        for i in itertools.count(201):
                            await client.append(live, page(i))
                            await trio.sleep(0.05)
                            if all(has_page(x, i, m) for x, m in zip(relayed, marks, strict=True)):
                                break
                            assert not any(x.closed.is_set() for x in relayed)
                    assert not any(x.closed.is_set() for x in relayed)
                    nursery.cancel_scope.cancel()
        for listener in listeners:
            await listener.stream.aclose()


TOKEN = "t" * 32


async def test_a_listener_with_a_capability_on_another_node_is_relayed(tmp_path: Path) -> None:
    """With tokens on, a player that cannot send the token presents the capability an
    answer to it handed on (``?exp=..&sig=..``). On a node that does not hold the stream,
    that query asks for nothing but access: the listener is relayed as a plain one is."""
    config = tmp_path / "mmstream.toml"
    config.write_text(
        f'[auth]\ncapability_key = "{"k" * 32}"\n'
        f'[[auth.tokens]]\ntoken = "{TOKEN}"\n'
        f'[cluster]\ntoken = "{TOKEN}"\n'
    )
    async with open_local_cluster(tmp_path, 2, relays=True, node_config=config) as cluster:
        async with connect(cluster.url, stream="radio", token=TOKEN) as client:
            stream = await start_source(client, "radio", 20)
            (owner,) = cluster.holders("radio")
            other = cluster.nodes[1 - owner]
            async with httpx.AsyncClient() as http:
                answer = await http.head(
                    f"http://{cluster.nodes[owner]}/streams/radio",
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )
            assert answer.status_code == 200, answer.text
            capability = answer.headers["x-mmstream-capability"]
            listener = await listen(cluster, "radio", at=other, query=capability)
            # Through the balancer too: spread over the nodes as plain listeners are, not
            # all hashed to the owner.
            balanced = [await listen(cluster, "radio", query=capability) for _ in range(4)]
            assert len({x.node for x in balanced}) == 2
            everyone = [listener, *balanced]
            stream = await play_to_the_end(client, "radio", stream, range(20, 40), everyone)
        for each in everyone:
            check_body(each, stream)
        # Relayed: the other node holds no copy of the stream.
        assert cluster.holders("radio") == [owner]
        # A forged capability is still refused there.
        forged = capability[:-4] + "AAAA"
        status, _ = await served_by(other, f"/streams/radio?{forged}")
        assert status == 403


async def test_a_relays_icy_listeners_get_the_owners_titles(tmp_path: Path) -> None:
    """Regression: a relayed listener that asked for titles got the ICY framing with no
    title in it (titles live with the owner)."""
    async with (
        open_local_cluster(tmp_path, 2, relays=True) as cluster,
        connect(cluster.url, stream="radio") as client,
    ):
        await start_source(client, "radio", 5)
        await client.set_title("Before", "radio")
        (owner,) = cluster.holders("radio")
        relay = cluster.nodes[1 - owner]
        stream = await trio.open_tcp_stream(relay.host, relay.port)
        await stream.send_all(b"GET /streams/radio HTTP/1.1\r\nHost: x\r\nIcy-MetaData: 1\r\n\r\n")
        body = b""
        while b"\r\n\r\n" not in body:
            body += await stream.receive_some(65536)
        head, _, rest = body.partition(b"\r\n\r\n")
        assert b"icy-metaint: 16000" in head.lower()  # a relay's
        received = bytearray(rest)

        def titles() -> list[bytes]:
            return split_icy(bytes(received), 16000)[1]

        async def read() -> None:
            while piece := await stream.receive_some(65536):
                received.extend(piece)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                i = 5
                while b"StreamTitle='Before';" not in titles():
                    await client.append("radio", page(i))
                    i, _ = i + 1, await trio.sleep(0.01)
                await client.set_title("After", "radio")
                while titles()[-1] != b"StreamTitle='After';":
                    await client.append("radio", page(i))
                    i, _ = i + 1, await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
        await stream.aclose()


async def test_a_relay_carries_the_owners_ogg_titles(tmp_path: Path) -> None:
    """An Icecast source's titles are Ogg chains in the owner's stream: a relay's listener
    gets them with the bytes (and a listener joining the relay later, the chain's header)."""
    async with open_local_cluster(tmp_path, 2, relays=True) as cluster:
        with trio.fail_after(60):
            await _relay_carries_titles(cluster)


async def _relay_carries_titles(cluster: LocalCluster) -> None:
    # The source on node 0 (it owns what it is sent), a listener on node 1 (a relay).
    owner, relay = cluster.nodes
    source = await trio.open_tcp_stream(owner.host, owner.port)
    await source.send_all(
        b"PUT /streams/radio HTTP/1.1\r\nHost: x\r\nContent-Type: audio/ogg\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    assert b" 100 " in await source.receive_some(4096)
    await source.send_all(HEADER + b"".join(page(i) for i in range(5)))

    async def listen_to_relay() -> tuple[trio.SocketStream, bytearray]:
        stream = await trio.open_tcp_stream(relay.host, relay.port)
        await stream.send_all(b"GET /streams/radio HTTP/1.1\r\nHost: x\r\n\r\n")
        body = bytearray()
        while b"\r\n\r\n" not in body:
            body += await stream.receive_some(65536)
        return stream, body

    early, early_body = await listen_to_relay()
    async with connect(cluster.node_url(0), stream="radio") as client:
        await client.set_title("Relayed", "radio")
    with trio.fail_after(30):
        i = 5
        while b"TITLE=Relayed" not in early_body:
            await source.send_all(page(i))
            i, _ = i + 1, await trio.sleep(0.02)
            with trio.move_on_after(0.01):
                early_body += await early.receive_some(65536)
        late, late_body = await listen_to_relay()
        await source.send_all(page(i))
        while late_body.count(b"OggS") < 3:
            late_body += await late.receive_some(65536)
    head_end = late_body.index(b"\r\n\r\n") + 4
    assert b"TITLE=Relayed" in late_body[head_end:].split(b"OggS")[2]  # its header's tags
    for stream in (early, late, source):
        await stream.aclose()
