"""The one exception tree of mmstream.

Every error raised on purpose by mmstream derives from :class:`MmstreamError` and carries
``code``, the stable machine-readable string that the wire protocol sends back to clients.
Each class also subclasses the builtin it narrows, so callers may catch ``ValueError``,
``KeyError`` or ``OSError`` as they would anywhere else.

Whose fault it is matters, as in trio: :class:`CacheClosedError` means the caller closed
the cache and then used it; :class:`StorageError` means the operating system failed us.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "BackendNotFoundError",
    "BatchLimitError",
    "CacheClosedError",
    "ChecksumMismatchError",
    "ConfigError",
    "ConflictError",
    "ConnectionFailedError",
    "InvalidArgumentError",
    "InvalidStreamIdError",
    "MmstreamError",
    "NoSpaceError",
    "NotUploadingError",
    "OffsetConflictError",
    "OutOfRangeError",
    "ProtocolError",
    "QuotaExceededError",
    "StorageError",
    "StreamBusyError",
    "StreamChangedError",
    "StreamExistsError",
    "StreamNotFoundError",
    "TooLargeError",
    "UnauthorizedError",
]


class MmstreamError(Exception):
    """Root of every error mmstream raises on purpose."""

    code: str = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        # KeyError would otherwise quote the message; one readable line everywhere.
        return self.message

    @property
    def public_message(self) -> str:
        """What a client is told: the message, unless it holds details (the server's file
        paths) that only the server's log should see."""
        return self.message


class ConfigError(MmstreamError, ValueError):
    """The configuration file or an option is wrong; the message names the key."""

    code = "config"


class BackendNotFoundError(MmstreamError, LookupError):
    """The configured cache backend is not installed or failed to load."""

    code = "backend"

    def __init__(self, message: str, *, available: Iterable[str] = ()) -> None:
        self.available = sorted(available)
        names = ", ".join(self.available) or "none"
        super().__init__(f"{message} (installed backends: {names})")


class InvalidArgumentError(MmstreamError, ValueError):
    """The caller passed a value the operation cannot accept."""

    code = "bad-request"


class OutOfRangeError(InvalidArgumentError):
    """An offset or length falls outside what exists or what may exist."""

    code = "out-of-range"


class BatchLimitError(InvalidArgumentError):
    """A batch holds more operations than the configured limit."""

    code = "too-large"


class TooLargeError(InvalidArgumentError):
    """A message, read or stream exceeds a configured size limit."""

    code = "too-large"


class InvalidStreamIdError(InvalidArgumentError):
    """A stream id outside the documented safe alphabet; rejected before any file is touched."""

    code = "invalid-id"


class StreamNotFoundError(MmstreamError, KeyError):
    """No stream has this id (or it was deleted)."""

    code = "not-found"


class StreamChangedError(StreamNotFoundError):
    """The stream read in pieces was deleted and its id now names another stream (another
    *generation*). A not-found, because the stream that was being read is gone; its own code,
    so that a client knows the id exists again and is not the stream it had."""

    code = "stream-changed"


class ConflictError(MmstreamError):
    """The request does not fit the stream's current state."""

    code = "conflict"


class StreamExistsError(ConflictError):
    """``create`` named an id that a stream already has."""

    code = "exists"


class OffsetConflictError(ConflictError):
    """An append's expected offset is not the stream's end; ``actual`` is how a client resumes."""

    code = "offset-conflict"

    def __init__(self, message: str, *, actual: int) -> None:
        super().__init__(message)
        self.actual = actual


class StreamBusyError(ConflictError):
    """Another writer holds the stream: one writer at a time, whatever the route (WebSocket
    upload, Icecast ``PUT``/``SOURCE``). The first keeps it; the second is refused."""

    code = "busy"


class NotUploadingError(ConflictError):
    """A write or finalize on a stream that is no longer UPLOADING (or an illegal transition)."""

    code = "not-uploading"


class ChecksumMismatchError(ConflictError):
    """Finalize was given a size or sha256 that does not match the stored bytes."""

    code = "checksum-mismatch"


class QuotaExceededError(MmstreamError):
    """Accepting the write would take the cache past ``max_cache_size``."""

    code = "quota"


class CacheClosedError(MmstreamError, ValueError):
    """The cache (or manager) was closed by its owner and then used again."""

    code = "closed"


class StorageError(MmstreamError, OSError):
    """The operating system failed an I/O call (fsync, fallocate, ftruncate, mmap...).

    A failed sync is never retried into a false success: the stream goes to ERROR.
    """

    code = "io-error"

    def __init__(
        self, message: str, *, errno: int | None = None, public: str | None = None
    ) -> None:
        MmstreamError.__init__(self, message)
        self.errno = errno
        self._public = public

    @property
    def public_message(self) -> str:
        """``public`` when given (the message without the server's paths), else the message."""
        return self._public if self._public is not None else self.message


class NoSpaceError(StorageError):
    """The file system has no room for the bytes (ENOSPC), reported before mapping them."""

    code = "no-space"


class UnauthorizedError(MmstreamError, PermissionError):
    """The token presented (or its absence) does not allow this operation on this stream."""

    code = "unauthorized"


class ProtocolError(MmstreamError):
    """The peer broke the wire protocol. ``close_code`` is the WebSocket close code to use
    when the frame itself was illegal; ``None`` means reply with an error and keep serving."""

    code = "bad-request"

    def __init__(self, message: str, *, close_code: int | None = None) -> None:
        super().__init__(message)
        self.close_code = close_code


class ConnectionFailedError(MmstreamError, ConnectionError):
    """The client could not reach the server or lost the connection (client side only:
    the wire never carries this code)."""

    code = "connection"
