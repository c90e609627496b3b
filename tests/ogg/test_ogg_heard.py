"""A source's own titles, read from its Ogg stream's comment headers (no sockets): the rule
Icecast uses, hostile comment headers, and the chainer taking them without writing a chain."""

from __future__ import annotations

import struct

import pytest
from ogg_pages import HEADER, page

from mmstream.ogg import OggChainer, comment_packet, comment_title


def tags(*comments: bytes, vendor: bytes = b"enc", magic: bytes = b"OpusTags") -> bytes:
    out = magic + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", len(comments))
    return out + b"".join(struct.pack("<I", len(c)) + c for c in comments)


@pytest.mark.parametrize(
    ("comments", "title"),
    [
        ((b"TITLE=Song", b"ARTIST=Band"), "Band - Song"),  # Icecast's "%s - %s"
        ((b"title=Song",), "Song"),  # names are case-insensitive
        ((b"Artist=Band", b"GENRE=x"), "Band"),
        ((b"TITLE=One", b"TITLE=Two"), "One"),  # the first, as vorbis_comment_query(…, 0)
        ((b"GENRE=x", b"TITLEX=no"), None),
        ((), None),
    ],
)
def test_the_title_is_formed_as_icecast_forms_it(
    comments: tuple[bytes, ...], title: str | None
) -> None:
    assert comment_title(tags(*comments), 1024) == title
    vorbis = tags(*comments, magic=b"\x03vorbis") + b"\x01"
    assert comment_title(vorbis, 1024) == title


def test_a_title_this_server_wrote_reads_back() -> None:
    assert comment_title(comment_packet(tags(b"ARTIST=a"), "Band - Song"), 1024) == "Band - Song"


def test_hostile_comment_headers_give_no_title_or_a_clean_one() -> None:
    whole = tags(b"ARTIST=Band", b"TITLE=Song")
    for cut in range(len(whole)):  # truncated anywhere: no title, no exception
        assert comment_title(whole[:cut], 1024) in (None, "Band")
    huge_vendor = b"OpusTags" + b"\xff\xff\xff\xff" + b"TITLE=x"
    huge_count = b"OpusTags" + struct.pack("<I", 0) + b"\xff\xff\xff\xff" + bytes(8)
    huge_comment = b"OpusTags" + struct.pack("<II", 0, 1) + b"\xff\xff\xff\xffTITLE=x"
    for packet in (huge_vendor, huge_count, huge_comment, b"", b"OpusTag", b"\x03vorbi"):
        assert comment_title(packet, 1024) is None
    assert comment_title(b"OpusHead" + bytes(11), 1024) is None  # not a comment header
    # Not UTF-8: replaced, not refused; control characters: one line; long: cut.
    assert comment_title(tags(b"TITLE=caf\xe9\xff"), 1024) == "caf\ufffd\ufffd"
    assert comment_title(tags(b"TITLE=a\nb\r\x00c"), 1024) == "a b  c"
    assert comment_title(tags(b"TITLE=" + "é".encode() * 5000), 1024) == "é" * 1024


def chained_source() -> tuple[bytes, int]:
    """A stream whose second logical stream (from the page at the returned offset) is titled
    "Band - Second": what a source such as ices2 sends at its next track."""
    chainer = OggChainer(serials=iter(range(1000, 2000)).__next__)
    first = chainer.feed(HEADER + page(0) + page(1), None)
    second = chainer.feed(page(2) + page(3), "Band - Second") + chainer.flush()
    data = first + second
    return data, data.index(b"OggS\x00\x02", len(first))  # its beginning-of-stream page


@pytest.mark.parametrize("step", [1, 7, 300, 100_000])
def test_the_chainer_hears_each_chains_title_once_and_writes_no_chain_for_it(step: int) -> None:
    data, second_at = chained_source()
    chainer, out, heard, current = OggChainer(), bytearray(), [], "Earlier"
    for at in range(0, len(data), step):
        # As the server does: the title heard, once taken, is the one fed from then on.
        out += chainer.feed(data[at : at + step], current)
        took = chainer.take_heard()
        if took is not None:
            heard.append((at, took))
            current = took
    out += chainer.flush()
    assert [title for _, title in heard] == ["Band - Second"]
    assert heard[0][0] + step > second_at  # heard within the bytes that carry it
    # The first chain (untitled) got the current title chained after it, as before; the
    # source's own titled chain got no other chain: it is in the bytes already.
    assert out.count(b"OpusHead") == 3 and b"TITLE=Earlier" in out
    assert out.endswith(data[second_at:]) and out.count(b"TITLE=Band - Second") == 1


@pytest.mark.parametrize("step", [1, 7, 300, 100_000])
def test_a_reader_hears_the_titles_and_gives_every_piece_back_as_it_was(step: int) -> None:
    """``chain=False`` (WebSocket uploads, stored as sent): titles heard, bytes untouched,
    even when the title fed would have been chained."""
    data, second_at = chained_source()
    reader, heard = OggChainer(chain=False), []
    for at in range(0, len(data), step):
        assert reader.feed(data[at : at + step], "Not Chained") == data[at : at + step]
        took = reader.take_heard()
        if took is not None:
            heard.append((at, took))
    assert reader.flush() == b""
    assert [title for _, title in heard] == ["Band - Second"]
    assert heard[0][0] + step > second_at


def test_a_reader_of_a_known_ogg_stream_starts_in_the_middle_of_a_page() -> None:
    """``ogg=True``: an upload resumed mid-page; the walker finds the next page, and the
    next chain's title is heard. Without it, those bytes are taken for another format."""
    data, second_at = chained_source()
    middle = data[second_at - 500 :]
    for ogg, heard in ((True, "Band - Second"), (None, None)):
        reader = OggChainer(chain=False, ogg=ogg)
        assert reader.feed(middle, None) == middle
        assert reader.take_heard() == heard
