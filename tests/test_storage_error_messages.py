"""A storage failure tells the client what failed, never where the server keeps its files:
the server's paths stay in its log. Every route that sends an error is checked here
without sockets; tests/client/test_full_disk.py checks a real full disk end to end."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import pytest

from mmstream.cache import os_errors
from mmstream.errors import NoSpaceError, StorageError
from mmstream.protocol import error_event, error_reply
from mmstream.server._icecast import _error_for
from mmstream.web.playback import error_response

SECRET = Path("/srv/private-layout/mmstream-cache/show-42.data")


def _raised(code: int) -> StorageError:
    with pytest.raises(StorageError) as caught, os_errors("writing", SECRET):
        raise OSError(code, "No space left on device", str(SECRET))
    return caught.value


@pytest.mark.parametrize(
    ("code", "kind"), [(errno.ENOSPC, NoSpaceError), (errno.EIO, StorageError)]
)
def test_wire_messages_name_no_server_path(code: int, kind: type[StorageError]) -> None:
    exc = _raised(code)
    assert type(exc) is kind
    assert str(SECRET) in str(exc)  # for the log
    body = error_response(exc).body
    assert isinstance(body, bytes)
    http_reply = _error_for(exc).partition(b"\r\n\r\n")[2]
    for message in (
        error_reply(1, exc).message,
        error_event("show-42", exc).message,
        body.decode(),
        json.loads(http_reply)["error"]["message"],
    ):
        assert "/srv" not in message and "private-layout" not in message, message
        assert "writing show-42.data" in message  # still says what failed


def test_a_full_disk_is_logged_with_its_path(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mmstream"):
        _raised(errno.ENOSPC)
    assert str(SECRET) in caplog.text
