"""A small Ogg Opus stream for live-listener tests: header pages, then numbered data pages."""

from __future__ import annotations

import struct


def ogg_page(payload: bytes, *, granule: int, flags: int = 0, seq: int = 0) -> bytes:
    lacing = [255] * (len(payload) // 255) + [len(payload) % 255]
    head = b"OggS" + struct.pack("<BBqIIIB", 0, flags, granule, 77, seq, 0, len(lacing))
    return head + bytes(lacing) + payload


HEADER = ogg_page(b"OpusHead" + bytes(11), granule=0, flags=2) + ogg_page(
    b"OpusTags" + bytes(8), granule=0, seq=1
)


def page(i: int) -> bytes:
    return ogg_page(bytes([i % 251]) * 1000, granule=960 * (i + 1), seq=i + 2)
