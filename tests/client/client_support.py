"""Names the client tests share with their conftest. A test module imports them from here,
not from ``conftest``: every test directory has a ``conftest`` module, and the first one
imported would answer for all (``pytest tests/client tests/web`` failed to collect)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mmstream.server import RunningServer

StartServer = Callable[..., Awaitable[RunningServer]]
