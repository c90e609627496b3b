"""Wire protocol v1, sans-I/O: message classes, the JSON codec and URL helpers.

Nothing here touches a socket or an event loop; the server and the client both build on it,
so they cannot drift apart. The specification is ``docs/protocol.md``.
"""

from __future__ import annotations

from .codec import REPLY_TYPES as REPLY_TYPES
from .codec import REQUEST_TYPES as REQUEST_TYPES
from .codec import WIRE_ERRORS as WIRE_ERRORS
from .codec import MalformedRequestError as MalformedRequestError
from .codec import decode_request as decode_request
from .codec import decode_server_message as decode_server_message
from .codec import encode_ack as encode_ack
from .codec import encode_event as encode_event
from .codec import encode_reply as encode_reply
from .codec import encode_request as encode_request
from .codec import error_event as error_event
from .codec import error_reply as error_reply
from .codec import exception_from_wire as exception_from_wire
from .codec import internal_error_reply as internal_error_reply
from .messages import *  # noqa: F403
from .messages import __all__ as _message_names
from .urls import PATH_PREFIX as PATH_PREFIX
from .urls import SUBPROTOCOL as SUBPROTOCOL
from .urls import Endpoint as Endpoint
from .urls import endpoint_url as endpoint_url
from .urls import parse_path as parse_path
from .urls import resolve_stream as resolve_stream

__all__ = [
    *_message_names,
    "PATH_PREFIX",
    "REPLY_TYPES",
    "REQUEST_TYPES",
    "SUBPROTOCOL",
    "WIRE_ERRORS",
    "Endpoint",
    "MalformedRequestError",
    "decode_request",
    "decode_server_message",
    "encode_ack",
    "encode_event",
    "encode_reply",
    "encode_request",
    "endpoint_url",
    "error_event",
    "error_reply",
    "exception_from_wire",
    "internal_error_reply",
    "parse_path",
    "resolve_stream",
]
