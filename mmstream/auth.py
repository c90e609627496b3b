"""Access control: optional bearer tokens with read/write scopes and stream patterns, and an
optional ``Origin`` allow-list for WebSocket upgrades.

Off unless ``[auth] tokens`` lists at least one token. Then every WebSocket session must
open with ``hello`` carrying a token (never the URL: URLs end up in proxy and access logs),
and HTTP requests carry it as ``Authorization: Bearer <token>`` (or as the password of
``Basic``, for tools that only speak that). A token grants scopes (``read``: stat, list,
read, tail, GET; ``write``: create, append, sync, finalize, delete, PUT, titles; ``admin``:
Icecast's admin and status API) on the streams
whose id matches its ``streams`` pattern (``fnmatch`` style: ``"*"``, ``"live-*"``).

Tokens are compared in constant time and never logged or echoed: errors say "unauthorized"
and nothing else about the token. A refused request has no effect at all: it is checked
before the manager is called.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hmac
import logging
import re
from collections.abc import Iterable

import attrs

from .capability import Capabilities
from .config import AuthConfig
from .errors import UnauthorizedError

__all__ = [
    "CHALLENGE",
    "OPERATION_SCOPES",
    "Authorizer",
    "Grant",
    "TokenRedactor",
    "basic_credentials",
    "redact_library_logs",
    "token_from_header",
]

#: The scope each operation needs (WebSocket ops and HTTP methods alike).
OPERATION_SCOPES: dict[str, str] = {
    "stat": "read",
    "list": "read",
    "read": "read",
    "tail": "read",
    "GET": "read",
    "HEAD": "read",
    "create": "write",
    "append": "write",
    "sync": "write",
    "finalize": "write",
    "delete": "write",
    "PUT": "write",
    "DELETE": "write",
    #: Icecast's ``/admin/metadata``: a source sets its own stream's title.
    "metadata": "write",
    #: Icecast's admin and status API (listing listeners, killing clients and sources).
    "admin": "admin",
}


@attrs.frozen
class Grant:
    """What one presented token allows."""

    scopes: frozenset[str]
    streams: str

    def covers(self, stream_id: str | None) -> bool:
        return stream_id is None or fnmatch.fnmatchcase(stream_id, self.streams)

    def allows(self, operation: str, stream_id: str | None) -> bool:
        scope = OPERATION_SCOPES.get(operation)
        return scope is not None and scope in self.scopes and self.covers(stream_id)


class Authorizer:
    """Built once from ``[auth]``; shared by the WebSocket sessions and the HTTP handler."""

    def __init__(self, config: AuthConfig) -> None:
        self._grants = [
            (entry.token.encode(), Grant(frozenset(entry.scopes), entry.streams))
            for entry in config.tokens
        ]
        self._origins = frozenset(origin.lower() for origin in config.origins)
        #: What HLS playlists hand to players that cannot send the token (docs/hls.md).
        self.capabilities = Capabilities(config.capability_key.encode() or None)
        self.capability_lifetime = config.capability_lifetime

    @property
    def enabled(self) -> bool:
        return bool(self._grants)

    def authenticate(self, token: str | None) -> Grant | None:
        """The grant of ``token``, or None. Every configured token is compared (in constant
        time), so the time taken says nothing about which one nearly matched."""
        if token is None or not self._grants:
            return None
        presented = token.encode("utf-8", "replace")
        found = None
        for secret, grant in self._grants:
            if hmac.compare_digest(secret, presented):
                found = grant
        return found

    def allows(self, grant: Grant | None, operation: str, stream_id: str | None) -> bool:
        """Whether ``grant`` allows ``operation`` on ``stream_id`` (always, with access
        control off). A session asks again when its grant changes (a new ``hello``):
        rights held on the strength of the old grant, such as an upload binding, end."""
        return not self.enabled or (grant is not None and grant.allows(operation, stream_id))

    def check(self, grant: Grant | None, operation: str, stream_id: str | None) -> None:
        """Raise :class:`UnauthorizedError` unless ``grant`` allows ``operation`` on
        ``stream_id``; with access control off everything is allowed."""
        if self.allows(grant, operation, stream_id):
            return
        if grant is None:
            raise UnauthorizedError("unauthorized: send hello with a valid token first")
        raise UnauthorizedError(f"unauthorized: the token does not allow {operation} here")

    def authorize(self, token: str | None, operation: str, stream_id: str | None) -> None:
        """One call for a request that carries its own token (HTTP): authenticate, then
        :meth:`check`. Raises :class:`UnauthorizedError` (HTTP 401/403, wire
        ``unauthorized``)."""
        if self.enabled:
            self.check(self.authenticate(token), operation, stream_id)

    def visible(self, grant: Grant | None, stream_ids: Iterable[str]) -> list[str]:
        """The ids a ``list`` shows: those the grant covers (all, with access control off)."""
        if not self.enabled:
            return list(stream_ids)
        return [sid for sid in stream_ids if grant is not None and grant.covers(sid)]

    def origin_allowed(self, origin: str | None) -> bool:
        """An upgrade with an ``Origin`` header must name a listed origin when the list is
        set (cross-site WebSocket hijacking); clients that send none (not browsers) pass."""
        return not self._origins or origin is None or origin.lower() in self._origins


#: The ``WWW-Authenticate`` of every HTTP 401. ``Bearer``, never ``Basic``: a Basic challenge
#: makes a browser prompt for a password and then send it with every request to the origin.
#: Icecast tools send Basic without being asked (ffmpeg does), and it is still accepted.
CHALLENGE = 'Bearer realm="mmstream"'


def token_from_header(value: str | None) -> str | None:
    """The token in an ``Authorization`` header: ``Bearer <token>``, or ``Basic`` with the
    token as the password (any user name). None when absent or malformed."""
    if not value:
        return None
    scheme, _, rest = value.strip().partition(" ")
    match scheme.lower():
        case "bearer":
            return rest.strip() or None
        case "basic":
            _, password = basic_credentials(value) or ("", "")
            return password or None
    return None


def basic_credentials(value: str | None) -> tuple[str, str] | None:
    """User name and password of a ``Basic`` ``Authorization`` header; None otherwise."""
    scheme, _, rest = (value or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(rest.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


_TOKEN_FIELD = re.compile(r"""(["']token["']\s*:\s*)(["'])(?:\\.|(?!\2).)*\2""")


class TokenRedactor(logging.Filter):
    """Blanks ``"token": "..."`` in log records: the WebSocket library logs whole frames
    at DEBUG, and a ``hello`` frame carries the token."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "token" in message:
            redacted, count = _TOKEN_FIELD.subn(r"\1\2***\2", message)
            # A long frame is logged cut in the middle: the token may be cut too.
            record.msg = redacted if count else "(a frame that may carry a token; redacted)"
            record.args = None
        return True


def redact_library_logs() -> None:
    """Install :class:`TokenRedactor` on the loggers that print frames (idempotent)."""
    for name in ("websockets.server", "trio-websocket"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, TokenRedactor) for f in logger.filters):
            logger.addFilter(TokenRedactor())
