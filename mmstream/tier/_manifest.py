"""The manifest: the small JSON object that makes a tiered stream exist in the bucket.

A stream goes up as two objects: its bytes (``streams/<id>/<generation>.data``, a multipart
upload whose completion commits it) and then its manifest (``streams/<id>.json``), which
names the generation, size, sha256, content type and metadata. The manifest is written
last and deleted first, as the sidecar is locally: a stream is in the bucket exactly when
its manifest is, and then its data object is whole.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from ..streams import StreamInfo, StreamStatus, check_stream_id, is_generation

__all__ = ["MANIFEST_FORMAT", "Manifest", "data_key", "manifest_key"]

MANIFEST_FORMAT = "mmstream-tier-manifest"
MANIFEST_VERSION = 1
#: A manifest is a few KiB at most (metadata is bounded by the manager); more is not ours.
MAX_MANIFEST_SIZE = 1024 * 1024


def manifest_key(stream_id: str) -> str:
    return f"streams/{stream_id}.json"


def data_key(stream_id: str, generation: str) -> str:
    return f"streams/{stream_id}/{generation}.data"


def _frozen(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


@attrs.frozen
class Manifest:
    """A tiered stream as its manifest object records it (see the module docstring): enough
    to restore the stream and to check the restored bytes against ``sha256``."""

    stream_id: str
    generation: str
    size: int
    sha256: str
    content_type: str
    metadata: Mapping[str, str] = attrs.field(converter=_frozen)
    created_at: float
    finalized_at: float

    @property
    def data_key(self) -> str:
        return data_key(self.stream_id, self.generation)

    @classmethod
    def of(cls, info: StreamInfo) -> Manifest:
        if info.sha256 is None or info.finalized_at is None:
            raise ValueError(f"stream {info.stream_id} is not READY")
        return cls(info.stream_id, info.generation, info.size, info.sha256, info.content_type,
                   info.metadata, info.created_at, info.finalized_at)  # fmt: skip

    def info(self) -> StreamInfo:
        """The stream as a node that does not hold it locally shows it."""
        return StreamInfo(stream_id=self.stream_id, status=StreamStatus.READY,
                          content_type=self.content_type, metadata=self.metadata,
                          size=self.size, durable_offset=self.size, reserved=0,
                          created_at=self.created_at, last_accessed_at=self.finalized_at,
                          finalized_at=self.finalized_at, sha256=self.sha256, error=None,
                          generation=self.generation, location="remote")  # fmt: skip

    def matches(self, info: StreamInfo) -> bool:
        """Whether this manifest describes exactly ``info``'s bytes."""
        return (self.generation, self.size, self.sha256) == (
            info.generation, info.size, info.sha256
        )  # fmt: skip

    def encode(self) -> bytes:
        body = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION,
                "stream": self.stream_id, "generation": self.generation, "size": self.size,
                "sha256": self.sha256, "content_type": self.content_type,
                "metadata": dict(self.metadata), "created_at": self.created_at,
                "finalized_at": self.finalized_at}  # fmt: skip
        return json.dumps(body, ensure_ascii=False, sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes, stream_id: str) -> Manifest:
        """Parse a manifest read from the bucket for ``stream_id``; anything else (another
        format, another stream, a malformed field) is a :class:`ValueError`."""
        if len(raw) > MAX_MANIFEST_SIZE:
            raise ValueError("manifest too large")
        try:
            body: Any = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"manifest is not JSON: {exc}") from None
        if not isinstance(body, dict) or body.get("format") != MANIFEST_FORMAT:
            raise ValueError("not an mmstream tier manifest")
        if body.get("version") != MANIFEST_VERSION:
            raise ValueError(f"manifest version {body.get('version')!r} is not supported")
        if body.get("stream") != stream_id or check_stream_id(stream_id) != stream_id:
            raise ValueError(f"manifest names stream {body.get('stream')!r}")
        meta = body.get("metadata")
        ok = (
            is_generation(body.get("generation"))
            and _is_int(body.get("size"))
            and isinstance(body.get("sha256"), str)
            and len(body["sha256"]) == 64
            and isinstance(body.get("content_type"), str)
            and isinstance(meta, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
            and _is_time(body.get("created_at"))
            and _is_time(body.get("finalized_at"))
        )
        if not ok:
            raise ValueError("manifest has a missing or malformed field")
        return cls(stream_id, body["generation"], body["size"], body["sha256"],
                   body["content_type"], body["metadata"], float(body["created_at"]),
                   float(body["finalized_at"]))  # fmt: skip


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
