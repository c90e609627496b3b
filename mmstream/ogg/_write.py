"""Ogg pages written: the page CRC, pages from packets, packets from pages, and a page
head's fields changed without its body at hand.

The CRC (RFC 3533: polynomial 0x04C11DB7, initial value 0, no reflection, no final XOR) is
linear, so changing bytes in a page head changes its CRC by the CRC of the change alone,
shifted over the bytes after it: :func:`patch_head` relabels a page (serial, granule,
sequence number) from its head and length, without holding its body. A relay of a live
stream stays as live as its source: a page's audio goes out as it arrives.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable, Sequence

from ._pages import CONTINUED, HEAD_SIZE

__all__ = ["crc", "packets", "patch_head", "write_pages"]

_POLY = 0x04C11DB7
#: Most segments on a page (the segment count is one byte).
_MAX_SEGMENTS = 255


def _table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        value = byte << 24
        for _ in range(8):
            value = ((value << 1) ^ _POLY if value & 0x80000000 else value << 1) & 0xFFFFFFFF
        table.append(value)
    return tuple(table)


_TABLE = _table()


def crc(data: bytes | bytearray, value: int = 0) -> int:
    """The Ogg CRC of ``data`` (the page with its CRC field zeroed), continuing ``value``."""
    for byte in data:
        value = ((value << 8) & 0xFFFFFFFF) ^ _TABLE[(value >> 24) ^ byte]
    return value


def _mulmod(a: int, b: int) -> int:
    """``a * b`` modulo the CRC polynomial, over GF(2)."""
    product = 0
    while b:
        if b & 1:
            product ^= a
        b >>= 1
        a <<= 1
        if a & 0x100000000:
            a ^= 0x100000000 | _POLY
    return product


@functools.lru_cache(maxsize=4096)
def _shift(zeros: int) -> int:
    """x^(8 * ``zeros``) modulo the polynomial: what ``zeros`` zero bytes do to a CRC."""
    result, base, exponent = 1, 1 << 8, zeros
    while exponent:
        if exponent & 1:
            result = _mulmod(result, base)
        base = _mulmod(base, base)
        exponent >>= 1
    return result


def patch_head(head: bytearray, length: int, *, granule: int, serial: int, sequence: int) -> None:
    """Set the granule, serial and sequence number of the page whose head is ``head`` (in
    place) and whose whole length is ``length``, and its CRC to match, without its body."""
    new = struct.pack("<qII", granule, serial, sequence)
    delta = bytes(a ^ b for a, b in zip(head[6:22], new, strict=True))
    head[6:22] = new
    change = _mulmod(crc(delta), _shift(length - 22))
    old = int.from_bytes(head[22:26], "little")
    head[22:26] = (old ^ change).to_bytes(4, "little")


def write_pages(
    packets: Iterable[bytes], *, serial: int, sequence: int, granule: int = 0, flags: int = 0
) -> tuple[bytes, int]:
    """``packets`` on pages of their own (a packet starts a page; one too long goes on
    over more pages), every page with ``granule``; the first with ``flags`` (``BOS``).
    Returns the pages and the next sequence number."""
    out = bytearray()
    for packet in packets:
        lacing = [255] * (len(packet) // 255) + [len(packet) % 255]
        at = continued = 0
        while lacing:
            segments, lacing = lacing[:_MAX_SEGMENTS], lacing[_MAX_SEGMENTS:]
            size = sum(segments)
            last = not lacing
            head = bytearray(b"OggS")
            head += struct.pack("<BBqIIIB", 0, flags | continued, granule if last else -1,
                                serial, sequence, 0, len(segments))  # fmt: skip
            head += bytes(segments)
            body = packet[at : at + size]
            head[22:26] = crc(body, crc(head)).to_bytes(4, "little")
            out += head + body
            at, sequence, flags, continued = at + size, sequence + 1, 0, CONTINUED
    return bytes(out), sequence


def packets(pages: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
    """The whole packets on ``pages`` (``(head, body)`` of each, in order, of one logical
    stream); a packet left unfinished on the last page is not returned."""
    found: list[bytes] = []
    current = bytearray()
    for head, body in pages:
        at = 0
        for size in head[HEAD_SIZE : HEAD_SIZE + head[26]]:
            current += body[at : at + size]
            at += size
            if size < 255:
                found.append(bytes(current))
                current = bytearray()
    return found
