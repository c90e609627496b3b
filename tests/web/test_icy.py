"""ICY metadata blocks and the interleaver, byte for byte (no sockets)."""

from __future__ import annotations

import pytest

from mmstream.icecast import MAX_BLOCK, IcyInterleaver, metadata_block, split_icy


def test_a_block_is_a_length_byte_then_sixteens_padded_with_nul() -> None:
    block = metadata_block("Artist - Song")
    text = b"StreamTitle='Artist - Song';"
    assert len(text) == 28
    assert block == b"\x02" + text + b"\x00" * 4
    assert (len(block) - 1) % 16 == 0


def test_exactly_sixteen_bytes_needs_no_padding() -> None:
    text = b"StreamTitle='a';"
    assert len(text) == 16
    assert metadata_block("a") == b"\x01" + text


def test_no_title_is_one_zero_byte() -> None:
    assert metadata_block(None) == b"\x00"


def test_an_empty_title_clears_the_title() -> None:
    assert metadata_block("") == b"\x01StreamTitle='';\x00"


def test_quotes_pass_unchanged_but_quote_semicolon_cannot_end_the_title_early() -> None:
    assert b"StreamTitle='Guns N' Roses - Don't Cry';" in metadata_block(
        "Guns N' Roses - Don't Cry"
    )
    block = metadata_block("a';b")
    assert b"StreamTitle='a' ;b';" in block


def test_control_characters_become_spaces() -> None:
    assert b"StreamTitle='a b c';" in metadata_block("a\x00b\nc")


def test_utf8_and_a_huge_title_is_cut_at_a_character_boundary() -> None:
    assert "Sigur Rós".encode() in metadata_block("Sigur Rós")
    block = metadata_block("é" * 5000)
    assert len(block) - 1 == block[0] * 16 <= MAX_BLOCK
    text = block[1:].rstrip(b"\x00")
    assert text.startswith(b"StreamTitle='") and text.endswith(b"';")
    text[13:-2].decode("utf-8")  # whole characters only


def test_interleaver_puts_a_block_after_every_metaint_bytes_title_once() -> None:
    icy = IcyInterleaver(metaint=10)
    out = icy.feed(bytes(range(25)), "one")
    block = metadata_block("one")
    assert out == bytes(range(10)) + block + bytes(range(10, 20)) + b"\x00" + bytes(range(20, 25))
    out = icy.feed(bytes(5), "two")  # reaches the boundary: the block waits for the next byte
    assert out == bytes(5)
    assert icy.feed(b"x", "three") == metadata_block("three") + b"x"


def test_interleaver_sends_nothing_new_as_zero_bytes_until_a_title_exists() -> None:
    icy = IcyInterleaver(metaint=4)
    assert icy.feed(b"abcdefgh", None) == b"abcd\x00efgh"
    assert icy.feed(b"ij", "t") == metadata_block("t") + b"ij"


@pytest.mark.parametrize("cut", [1, 3, 7, 16, 100])
def test_split_icy_recovers_audio_and_titles_whatever_the_feed_sizes(cut: int) -> None:
    audio = bytes(i % 251 for i in range(1000))
    icy = IcyInterleaver(metaint=64)
    body = b""
    for n, at in enumerate(range(0, len(audio), cut)):
        body += icy.feed(audio[at : at + cut], f"title {n // 50}")
    got, blocks = split_icy(body, 64)
    assert got == audio
    assert all(block.startswith(b"StreamTitle='title ") for block in blocks)
    assert len(set(blocks)) == len(blocks)  # each title once


def test_metaint_must_be_positive() -> None:
    with pytest.raises(ValueError):
        IcyInterleaver(metaint=0)
