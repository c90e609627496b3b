"""The metadata sidecar ``<id>.json``: a small versioned JSON record per stream.

The sidecar is the stream's commit record. Creating a stream writes its data file first and
the sidecar second; deleting removes the sidecar first. So a stream exists exactly when its
sidecar does, and a data file without a sidecar belongs to a create or delete that never
completed (recovery removes it).

Every write is atomic: ``<id>.json.tmp`` is written (O_EXCL|O_NOFOLLOW), fsynced, renamed over
the sidecar and the directory fsynced; a reader sees the old record or the new one.

For an UPLOADING stream ``durable_offset`` is the last offset a successful flush made durable:
recovery resumes the upload there and never exposes a byte past it. For a READY stream it is
the final size.

Versions: a reader accepts every version up to :data:`SIDECAR_VERSION`; a field added after
version 1 is listed in :data:`ADDED_IN` and an older sidecar, which lacks it, gets it from
:func:`_upgrade`. A sidecar is written in the current version only, the next time its stream
records anything. Version 2 added ``generation``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from attrs import validators as v

from ..cache import MAX_FILE_SIZE, MemoryMappedCache, fsync_directory, os_errors
from ._context import StreamContext, StreamStatus, is_generation, legacy_generation
from ._directory import data_path, sidecar_path

__all__ = [
    "ADDED_IN",
    "SIDECAR_FORMAT",
    "SIDECAR_VERSION",
    "SidecarError",
    "SidecarRecord",
    "read_limited",
    "read_sidecar",
    "write_atomically",
    "write_sidecar",
    "write_sidecars",
]

SIDECAR_FORMAT = "mmstream-sidecar"
SIDECAR_VERSION = 2
#: The version that added each field that version 1 did not have.
ADDED_IN: Mapping[str, int] = {"generation": 2}
#: A sidecar is a few hundred bytes; anything larger was not written by us.
MAX_SIDECAR_BYTES = 256 * 1024
TMP_SUFFIX = ".tmp"

_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


class SidecarError(ValueError):
    """A sidecar that cannot be trusted; recovery quarantines its stream."""


def _offset(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_FILE_SIZE:
        raise SidecarError(f"{attribute.name} must be an integer in 0..{MAX_FILE_SIZE}")


def _str_map(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(x, str) for k, x in value.items()
    ):
        raise SidecarError(f"{attribute.name} must map strings to strings")


def _generation(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    if not is_generation(value):
        raise SidecarError(f"{attribute.name} must be 16 lowercase hexadecimal digits")


_opt_str = v.optional(v.instance_of(str))
_opt_float = v.optional(v.instance_of((int, float)))


@attrs.frozen
class SidecarRecord:
    """What a sidecar holds: exactly the fields that must survive a restart (the rest of a
    :class:`StreamContext` is rebuilt from the data file), validated when read so that a
    damaged sidecar quarantines its stream instead of loading garbage."""

    stream_id: str = attrs.field(validator=v.instance_of(str))
    status: StreamStatus = attrs.field(validator=v.instance_of(StreamStatus))
    content_type: str = attrs.field(validator=v.instance_of(str))
    metadata: Mapping[str, str] = attrs.field(validator=_str_map)
    durable_offset: int = attrs.field(validator=_offset)
    created_at: float = attrs.field(validator=v.instance_of((int, float)))
    last_accessed_at: float = attrs.field(validator=v.instance_of((int, float)))
    finalized_at: float | None = attrs.field(validator=_opt_float)
    sha256: str | None = attrs.field(validator=_opt_str)
    error: str | None = attrs.field(validator=_opt_str)
    generation: str = attrs.field(validator=_generation)

    @classmethod
    def of(cls, ctx: StreamContext) -> SidecarRecord:
        return cls(
            stream_id=ctx.stream_id,
            status=ctx.status,
            content_type=ctx.content_type,
            metadata=dict(ctx.metadata),
            durable_offset=ctx.durable_offset,
            created_at=ctx.created_at,
            last_accessed_at=ctx.last_accessed_at,
            finalized_at=ctx.finalized_at,
            sha256=ctx.sha256,
            error=ctx.error,
            generation=ctx.generation,
        )

    def to_context(self, directory: Path, cache: MemoryMappedCache | None) -> StreamContext:
        """The stream as recovery rebuilds it: at its durable offset, nothing past it."""
        ctx = StreamContext(
            stream_id=self.stream_id,
            data_path=data_path(directory, self.stream_id),
            sidecar_path=sidecar_path(directory, self.stream_id),
            cache=cache,
            status=self.status,
            created_at=self.created_at,
            last_accessed_at=self.last_accessed_at,
            content_type=self.content_type,
            metadata=dict(self.metadata),
            size=self.durable_offset,
            durable_offset=self.durable_offset,
            finalized_at=self.finalized_at,
            sha256=self.sha256,
            error=self.error,
            generation=self.generation,
        )
        ctx.access_recorded = self.last_accessed_at
        ctx.recorded = (self.status, self.durable_offset)
        return ctx

    def encode(self) -> bytes:
        data = {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, **attrs.asdict(self)}
        data["status"] = self.status.value
        return json.dumps(data, indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def decode(cls, raw: bytes) -> SidecarRecord:
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise SidecarError(f"not valid JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
            raise SidecarError("not an mmstream sidecar")
        version = data.pop("version", None)
        if type(version) is not int or not 1 <= version <= SIDECAR_VERSION:
            raise SidecarError(f"sidecar version {version!r} is not 1..{SIDECAR_VERSION}")
        data.pop("format")
        fields = {f.name for f in attrs.fields(cls) if ADDED_IN.get(f.name, 1) <= version}
        if set(data) != fields:
            raise SidecarError(f"fields {sorted(set(data) ^ fields)} missing or unexpected")
        _upgrade(data, version)
        try:
            data["status"] = StreamStatus(data["status"])
            return cls(**data)
        except (ValueError, TypeError) as exc:  # SidecarError is a ValueError
            raise SidecarError(str(exc)) from None


def _upgrade(data: dict[str, Any], version: int) -> None:
    """Give a sidecar of an older ``version`` the fields it lacks."""
    if version < ADDED_IN["generation"]:
        data["generation"] = legacy_generation(str(data["stream_id"]), data["created_at"])


def write_sidecar(path: Path, record: SidecarRecord) -> None:
    """Atomically replace ``path`` with ``record`` (blocking: call it in a worker thread)."""
    write_atomically(path, record.encode())


def write_sidecars(records: Sequence[tuple[Path, SidecarRecord]]) -> None:
    """:func:`write_sidecar` for many, with one directory sync for them all (blocking)."""
    for path, record in records:
        write_atomically(path, record.encode(), sync_directory=False)
    if records:
        fsync_directory(records[0][0])


def write_atomically(path: Path, payload: bytes, *, sync_directory: bool = True) -> None:
    """Replace ``path`` with ``payload``: a temporary file written and fsynced, renamed over
    it, and the directory fsynced (unless the caller syncs it once for several files)."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with os_errors("writing", tmp):
        try:
            fd = os.open(tmp, _WRITE_FLAGS, 0o600)
        except FileExistsError:  # left by a write that failed part-way; we own the name
            os.unlink(tmp)
            fd = os.open(tmp, _WRITE_FLAGS, 0o600)
        try:
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path)
        except BaseException:
            _unlink_quietly(tmp)
            raise
    if sync_directory:
        fsync_directory(path)


def read_sidecar(path: Path) -> SidecarRecord:
    """Read and validate a sidecar; :class:`SidecarError` if it cannot be trusted, the
    ``OSError`` if it cannot be read (a symlink is refused with ELOOP, never followed)."""
    raw = read_limited(path, MAX_SIDECAR_BYTES)
    if len(raw) > MAX_SIDECAR_BYTES:
        raise SidecarError(f"larger than {MAX_SIDECAR_BYTES} bytes")
    return SidecarRecord.decode(raw)


def read_limited(path: Path, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of ``path`` (more than ``limit``: not a file of ours),
    never following a symlink."""
    fd = os.open(path, _READ_FLAGS)
    try:
        chunks: list[bytes] = []
        got = 0
        while got <= limit and (chunk := os.read(fd, limit + 1 - got)):
            chunks.append(chunk)
            got += len(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):  # the caller is already raising the error that matters
        os.unlink(path)
