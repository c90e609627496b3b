"""Icecast's URL listener auth, as decisions (no sockets)."""

from __future__ import annotations

from urllib.parse import parse_qs

from mmstream.icecast import ListenerHookCall, admitted

CALL = ListenerHookCall(
    server="radio.example", port=8000, client=7, mount="/streams/live", ip="192.0.2.1",
    agent="VLC/3.0 & friends", user="u", password="p=1",
)  # fmt: skip


def _form(body: bytes) -> dict[str, str]:
    return {
        name: values[0] for name, values in parse_qs(body.decode(), keep_blank_values=True).items()
    }


def test_listener_add_carries_icecasts_fields() -> None:
    assert _form(CALL.add_body()) == {
        "action": "listener_add", "server": "radio.example", "port": "8000", "client": "7",
        "mount": "/streams/live", "user": "u", "pass": "p=1", "ip": "192.0.2.1",
        "agent": "VLC/3.0 & friends",
    }  # fmt: skip


def test_listener_remove_says_how_long() -> None:
    form = _form(CALL.remove_body(12.7))
    assert form["action"] == "listener_remove" and form["duration"] == "12"
    assert form["client"] == "7" and form["mount"] == "/streams/live"


def test_admitted_only_on_200_with_the_auth_header() -> None:
    ok = {"icecast-auth-user": "1"}
    assert admitted("answered", 200, ok, on_failure="deny")
    assert not admitted("answered", 200, {}, on_failure="allow")
    assert not admitted("answered", 200, {"icecast-auth-user": "0"}, on_failure="allow")
    assert not admitted("answered", 403, ok, on_failure="allow")
    assert not admitted("answered", 500, ok, on_failure="allow")


def test_a_hook_that_fails_follows_the_policy() -> None:
    for outcome in ("timeout", "unreachable"):
        assert admitted(outcome, None, {}, on_failure="allow")  # type: ignore[arg-type]
        assert not admitted(outcome, None, {}, on_failure="deny")  # type: ignore[arg-type]
