"""A relay's source against an owner slow to answer: the owner is a scripted peer on a real
WebSocket (websockets' Trio server), the relay's side is the real client."""

from __future__ import annotations

from functools import partial

import trio
from websockets.trio.server import ServerConnection, serve
from websockets.typing import Subprotocol

from mmstream.protocol import SUBPROTOCOL, Stat, Tail, TailReply, decode_request, encode_reply
from mmstream.server._relay import relay_source


async def test_a_relay_feeds_the_owners_bytes_while_its_title_question_is_unanswered() -> None:
    """The regression test for the title poll in a task of its own: on main the relay asked
    the owner's ``stat`` between two pieces of the tail and fed nothing until the answer
    came, so each question (one per ``send_interval``) held the relay's listeners for as
    long as the owner took to answer: tens of ms on a busy owner (docs/fanout.md, "Two
    workers"). Here the owner never answers, and the second piece must still arrive."""
    asked = trio.Event()

    async def answer(ws: ServerConnection, message: str | bytes) -> None:
        match decode_request(message):
            case Tail(id=request_id, stream=stream):
                await ws.send(
                    encode_reply(TailReply(re=request_id, stream=stream or "s", offset=0))
                )
                await ws.send(b"one")
                await asked.wait()  # the relay asked for the title after the first piece
                await ws.send(b"two")
            case Stat():
                asked.set()
                await trio.sleep_forever()  # a busy owner: no answer yet

    async def owner(ws: ServerConnection) -> None:
        async with trio.open_nursery() as nursery:
            async for message in ws:
                nursery.start_soon(answer, ws, message)

    fed: list[bytes] = []
    async with trio.open_nursery() as nursery:
        protocols = [Subprotocol(SUBPROTOCOL)]
        server = await nursery.start(
            partial(serve, owner, 0, host="127.0.0.1", subprotocols=protocols, compression=None)
        )
        port = server.listeners[0].socket.getsockname()[1]
        follow = relay_source(f"ws://127.0.0.1:{port}", "s", token=None, on_title=print, interval=0)
        nursery.start_soon(follow, lambda data, _live: fed.append(data))
        with trio.move_on_after(5):
            while fed != [b"one", b"two"]:  # noqa: ASYNC110 (fed by the relay's own task)
                await trio.sleep(0.01)
        assert asked.is_set()
        assert fed == [b"one", b"two"]
        nursery.cancel_scope.cancel()
