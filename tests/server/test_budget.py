"""ByteBudget: what connections may hold, per connection and in all, without sockets."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from mmstream.server._budget import Account, ByteBudget, client_frame_size, payload_size


def test_a_connection_never_holds_more_than_its_own_cap() -> None:
    budget = ByteBudget(limit=100, per_connection=40, guaranteed=10)
    account = budget.open_account()
    assert account.allowance() == 40
    account.charge(30)
    assert account.allowance() == 10
    account.charge(10)
    assert account.allowance() == 0
    account.release(25)
    assert account.allowance() == 25


def test_beyond_the_guarantee_only_while_the_shared_budget_has_room() -> None:
    budget = ByteBudget(limit=100, per_connection=80, guaranteed=10)
    greedy, other = budget.open_account(), budget.open_account()
    greedy.charge(80)
    other.charge(20)
    assert budget.held == 100
    assert greedy.allowance() == 0
    assert other.allowance() == 0  # past its guarantee, and nothing shared is left
    newcomer = budget.open_account()
    assert newcomer.allowance() == 10  # the guarantee holds whatever the others hold
    newcomer.charge(10)
    assert newcomer.allowance() == 0
    assert budget.held == 110  # at most limit + guaranteed per connection


def test_waiters_are_woken_in_order_when_room_comes_back() -> None:
    budget = ByteBudget(limit=100, per_connection=100, guaranteed=1)
    hog = budget.open_account()
    hog.charge(100)
    woken: list[str] = []
    first, second = budget.open_account(), budget.open_account()
    first.charge(1)
    second.charge(1)
    first.wait_for_room(lambda: woken.append("first"))
    second.wait_for_room(lambda: woken.append("second"))
    assert budget.waiting == 2 and not woken
    hog.release(40)
    assert woken == ["first", "second"]
    assert budget.waiting == 0


def test_a_connection_at_its_own_cap_waits_for_its_own_release() -> None:
    budget = ByteBudget(limit=1000, per_connection=10, guaranteed=5)
    account, other = budget.open_account(), budget.open_account()
    account.charge(10)
    woken: list[Account] = []
    account.wait_for_room(lambda: woken.append(account))
    other.charge(5)
    other.release(5)  # room in the budget, not under this connection's own cap
    assert not woken
    account.release(3)
    assert woken == [account]


def test_wait_for_room_wakes_at_once_when_there_is_room() -> None:
    budget = ByteBudget(limit=10, per_connection=10)
    woken: list[bool] = []
    budget.open_account().wait_for_room(lambda: woken.append(True))
    assert woken == [True]


def test_closing_releases_everything_and_wakes_its_own_waiter() -> None:
    budget = ByteBudget(limit=10, per_connection=10, guaranteed=1)
    account, waiter = budget.open_account(), budget.open_account()
    account.charge(10)
    waiter.charge(1)
    woken: list[str] = []
    waiter.wait_for_room(lambda: woken.append("waiter"))
    account.wait_for_room(lambda: woken.append("closed"))
    account.close()
    account.close()
    assert budget.held == 1
    assert woken == ["waiter", "closed"]
    assert account.allowance() == 0
    account.charge(5)  # late charges of a closed connection count for nothing
    account.release(5)
    assert budget.held == 1


def test_releases_never_go_below_zero() -> None:
    budget = ByteBudget(limit=10, per_connection=10)
    account = budget.open_account()
    account.charge(3)
    account.release(5)
    assert account.held == 0 and budget.held == 0


def test_invalid_budgets() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ByteBudget(limit=0, per_connection=1)


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 300_000])
def test_client_frame_size_is_what_a_client_frame_takes(size: int) -> None:
    frame = Frame(Opcode.BINARY, bytes(size))
    assert client_frame_size(size) == len(frame.serialize(mask=True))


def test_payload_size_counts_utf8_bytes() -> None:
    assert payload_size(b"\xff\x00") == 2
    assert payload_size("abc") == 3
    assert payload_size("é✓") == len("é✓".encode())
