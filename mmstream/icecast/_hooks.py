"""Icecast's URL listener authentication (``<authentication type="url">``), as decisions.

Before a live listener gets a byte, the server POSTs a form to ``listener_add``; the listener
is admitted only if the hook answers ``200`` with ``icecast-auth-user: 1`` (Icecast's
``auth_header``). When it leaves, ``listener_remove`` gets a POST with how long it stayed.
The fields are Icecast 2.4's (``auth_url.c``), so existing hook scripts (AzuraCast's,
WHMCS panels', a few lines of PHP) work unchanged: ``action``, ``server``, ``port``,
``client`` (the listener's id, as ``listclients`` and ``killclient`` know it), ``mount``,
``user``, ``pass``, ``ip``, ``agent``, and ``duration`` (seconds) on removal.

A hook that does not answer within its timeout, or cannot be reached, is decided by the
configured policy: ``deny`` (the default, as Icecast) or ``allow`` (keep the station on the
air when the auth service is down).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlencode

import attrs

__all__ = ["AUTH_HEADER", "HookOutcome", "ListenerHookCall", "admitted"]

#: Icecast's default ``auth_header``: its value must be ``1``.
AUTH_HEADER = "icecast-auth-user"

HookOutcome = Literal["answered", "timeout", "unreachable"]


@attrs.frozen
class ListenerHookCall:
    """What a hook is told about one listener."""

    server: str
    port: int
    client: int
    mount: str
    ip: str
    agent: str
    user: str = ""
    password: str = ""

    def add_body(self) -> bytes:
        return self._form("listener_add")

    def remove_body(self, duration: float) -> bytes:
        return self._form("listener_remove", duration=str(int(duration)))

    def _form(self, action: str, **extra: str) -> bytes:
        fields = {"action": action, "server": self.server, "port": str(self.port),
                  "client": str(self.client), "mount": self.mount, "user": self.user,
                  "pass": self.password, **extra, "ip": self.ip, "agent": self.agent}  # fmt: skip
        return urlencode(fields).encode()


def admitted(
    outcome: HookOutcome,
    status: int | None,
    headers: Mapping[str, str],
    *,
    on_failure: Literal["allow", "deny"],
) -> bool:
    """Whether the listener gets the stream: an answered hook admits only with 200 and
    ``icecast-auth-user: 1``; a timeout or an unreachable hook follows ``on_failure``."""
    if outcome != "answered":
        return on_failure == "allow"
    return status == 200 and headers.get(AUTH_HEADER, "").strip() == "1"
