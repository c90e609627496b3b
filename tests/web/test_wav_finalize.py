"""finalize repairs a streamed WAV's header sizes; other streams are left byte for byte."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import wave

import pytest

from mmstream.audio import parse_wav
from mmstream.errors import ChecksumMismatchError
from mmstream.streams import StreamManager

# Python's wave module writing to a pipe: the header states only the first block's size.
_WAVE_TO_PIPE = """
import sys, wave
w = wave.open(sys.stdout.buffer, "wb")
w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000)
for i in range(8):
    w.writeframesraw(bytes([i, 1]) * 4000)
try:
    w.close()
except OSError:
    pass
"""


@pytest.fixture(scope="module")
def piped_wav() -> bytes:
    return subprocess.run(
        [sys.executable, "-c", _WAVE_TO_PIPE], capture_output=True, check=True
    ).stdout


async def _upload(manager: StreamManager, stream_id: str, data: bytes, content_type: str) -> None:
    await manager.create(stream_id, content_type=content_type)
    for start in range(0, len(data), 5000):  # as a live upload arrives
        await manager.append(stream_id, data[start : start + 5000])


async def test_finalize_repairs_a_piped_wav(manager: StreamManager, piped_wav: bytes) -> None:
    with wave.open(io.BytesIO(piped_wav)) as as_uploaded:
        assert as_uploaded.getnframes() == 4000  # the header lies: there are 32000
    await _upload(manager, "take", piped_wav, "audio/wav")
    info = await manager.finalize("take", sha256=hashlib.sha256(piped_wav).hexdigest())
    stored = await manager.read("take", 0, info.size)
    assert len(stored) == len(piped_wav) and stored[44:] == piped_wav[44:]
    with wave.open(io.BytesIO(stored)) as reader:
        assert reader.getnframes() == 32000
    assert info.sha256 == hashlib.sha256(stored).hexdigest()
    parsed = parse_wav(stored, len(stored))
    assert parsed is not None and parsed.duration == pytest.approx(2.0)


async def test_checksum_is_of_what_the_client_sent(
    manager: StreamManager, piped_wav: bytes
) -> None:
    await _upload(manager, "take", piped_wav, "audio/x-wav")
    patched_digest = "0" * 64
    with pytest.raises(ChecksumMismatchError):
        await manager.finalize("take", sha256=patched_digest)
    assert (await manager.finalize("take")).sha256 != hashlib.sha256(piped_wav).hexdigest()


async def test_other_types_are_untouched(manager: StreamManager, piped_wav: bytes) -> None:
    await _upload(manager, "raw", piped_wav, "application/octet-stream")
    info = await manager.finalize("raw")
    assert await manager.read("raw", 0, info.size) == piped_wav


async def test_a_declared_wav_that_is_not_one_is_untouched(manager: StreamManager) -> None:
    data = b"not a wav at all" * 100
    await _upload(manager, "fake", data, "audio/wav")
    info = await manager.finalize("fake")
    assert await manager.read("fake", 0, info.size) == data
