"""ConnectionLimiter: admission at the caps, without sockets."""

from __future__ import annotations

import pytest

from mmstream.server._admission import ConnectionLimiter, Slot


def admit(limiter: ConnectionLimiter, ip: str, evicted: list[Slot]) -> Slot:
    slot = limiter.admit(ip)
    slot.evict = lambda: evicted.append(slot)
    return slot


def test_under_the_caps_everyone_gets_a_full_slot() -> None:
    limiter = ConnectionLimiter(3, 2)
    slots = [limiter.admit(ip) for ip in ("a", "a", "b")]
    assert [slot.refusal for slot in slots] == [None, None, None]
    assert limiter.active == 3


def test_at_the_cap_the_longest_idle_connection_makes_room() -> None:
    limiter = ConnectionLimiter(3, 3)
    evicted: list[Slot] = []
    first, second, third = (admit(limiter, "a", evicted) for _ in range(3))
    second.busy()
    first.busy()
    first.idle()  # idle again: now the newest idle one
    newcomer = admit(limiter, "b", evicted)
    assert newcomer.refusal is None
    assert evicted == [third]
    assert third.released and limiter.active == 3
    assert admit(limiter, "c", evicted).refusal is None
    assert evicted == [third, first]


def test_when_every_slot_is_busy_newcomers_get_overflow_slots() -> None:
    limiter = ConnectionLimiter(2, 2, overflow=2)
    evicted: list[Slot] = []
    for slot in (admit(limiter, "a", evicted), admit(limiter, "b", evicted)):
        slot.busy()
    over = [admit(limiter, "c", evicted) for _ in range(3)]
    assert [slot.refusal for slot in over] == ["too many connections"] * 3
    assert evicted == [over[0]]  # the oldest overflow slot made room for the third
    assert limiter.active == 2
    limiter.release(over[1])
    limiter.release(over[1])  # idempotent
    assert admit(limiter, "c", evicted).refusal is not None
    assert evicted == [over[0]]


def test_the_per_address_cap_evicts_only_that_address_s_idle_connections() -> None:
    limiter = ConnectionLimiter(10, 2)
    evicted: list[Slot] = []
    other = admit(limiter, "b", evicted)  # idle longest, but another address
    a1, a2 = admit(limiter, "a", evicted), admit(limiter, "a", evicted)
    a3 = admit(limiter, "a", evicted)
    assert a3.refusal is None and evicted == [a1]
    a2.busy()
    a3.busy()
    refused = admit(limiter, "a", evicted)
    assert refused.refusal == "too many connections from this address"
    assert not other.released


def test_released_slots_free_their_address() -> None:
    limiter = ConnectionLimiter(1, 1)
    slot = limiter.admit("a")
    slot.busy()
    limiter.release(slot)
    slot.idle()  # late marks from a closing connection change nothing
    assert limiter.active == 0
    assert limiter.admit("a").refusal is None


def test_invalid_caps() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ConnectionLimiter(0, 1)


def test_a_proxied_connection_counts_for_the_client_it_forwards() -> None:
    limiter = ConnectionLimiter(10, 2)
    evicted: list[Slot] = []
    proxied = [admit(limiter, "proxy", evicted) for _ in range(2)]
    for slot, client in zip(proxied, ("c1", "c1"), strict=True):
        slot.busy()
        assert limiter.rebind(slot, client)
    # The proxy's own address is free again; the client is at its cap, all busy.
    third = admit(limiter, "proxy", evicted)
    third.busy()
    assert third.refusal is None
    assert not limiter.rebind(third, "c1") and third.ip == "proxy"
    assert limiter.rebind(third, "c2") and third.ip == "c2"
    # An idle connection of the client makes room, as at admission.
    proxied[0].idle()
    fourth = admit(limiter, "proxy", evicted)
    assert limiter.rebind(fourth, "c1") and evicted == [proxied[0]]
    for slot in (proxied[1], third, fourth):
        limiter.release(slot)
    assert limiter.active == 0
    assert limiter.admit("c1").refusal is None
