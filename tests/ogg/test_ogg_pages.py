"""The one Ogg page iterator: the same pages whatever the pieces, header bodies whole."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from ogg_pages import HEADER, ogg_page, page

from mmstream.ogg import BOS, OggPage, OggPages

STREAM = HEADER + b"".join(page(i) for i in range(5))


def pages_of(data: bytes, cuts: list[int]) -> list[OggPage]:
    walker, found, at = OggPages(), [], 0
    for cut in sorted(cuts):
        walker.feed(data[at:cut], at, found)
        at = max(at, cut)
    walker.feed(data[at:], at, found)
    return found


@given(st.lists(st.integers(0, len(STREAM)), max_size=8))
def test_the_same_pages_whatever_the_pieces(cuts: list[int]) -> None:
    assert pages_of(STREAM, cuts) == pages_of(STREAM, [])


def test_header_pages_come_whole_and_audio_is_skipped() -> None:
    found = pages_of(STREAM, [])
    size = len(page(0))
    assert [p.offset for p in found] == [0, 47, *(len(HEADER) + i * size for i in range(5))]
    bos, tags, first = found[:3]
    assert bos.flags & BOS and bos.body.startswith(b"OpusHead") and bos.serial == 77
    assert tags.body.startswith(b"OpusTags") and tags.sequence == 1
    assert first.body == b"" and first.granule == 960 and first.sequence == 2
    assert all(p.head.startswith(b"OggS") for p in found)


def test_garbage_is_skipped_to_the_next_page() -> None:
    junk = b"xxOggxOgg" * 10
    found = pages_of(junk + STREAM + junk + page(9), [3, 50])
    assert [p.offset - len(junk) for p in found][:2] == [0, 47]
    assert found[-1].granule == 9600


def test_a_page_with_no_packet_end_is_a_header_page() -> None:
    found = pages_of(ogg_page(b"x" * 300, granule=-1), [])
    assert found[0].is_header and found[0].body == b"x" * 300
