"""The RFC 8216bis rules a media playlist must keep, checked line by line: what every HLS test
runs over the playlists the server gives (pure, no I/O)."""

from __future__ import annotations

import math
import re

import attrs

_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def attributes(value: str) -> dict[str, str]:
    """An attribute list (§4.2) as a dict, quotes removed."""
    return {k: v.strip('"') for k, v in _ATTRIBUTE.findall(value)}


@attrs.define
class Checked:
    """What a checked playlist holds: segment URIs by media sequence number, part URIs by
    ``(sequence, index)``, the preload hint, and the tags' values."""

    segments: dict[int, str] = attrs.Factory(dict)
    durations: dict[int, float] = attrs.Factory(dict)
    parts: dict[tuple[int, int], str] = attrs.Factory(dict)
    part_durations: dict[tuple[int, int], float] = attrs.Factory(dict)
    hint: str | None = None
    part_target: float | None = None
    target: int = 0
    ended: bool = False
    tags: dict[str, str] = attrs.Factory(dict)

    @property
    def last_part(self) -> tuple[int, int] | None:
        return max(self.parts, default=None)


def check_playlist(text: str) -> Checked:
    """Assert the rules of §4.4 (with LL-HLS's §4.4.3.7-8, §4.4.4.9, §4.4.5.3) and return
    what the playlist holds."""
    lines = text.splitlines()
    assert lines and lines[0] == "#EXTM3U", "§4.4.1.1: EXTM3U first"
    assert text.endswith("\n") and "\r" not in text
    found = Checked()
    once = ("EXT-X-TARGETDURATION", "EXT-X-MEDIA-SEQUENCE", "EXT-X-PLAYLIST-TYPE",
            "EXT-X-VERSION", "EXT-X-SERVER-CONTROL", "EXT-X-PART-INF")  # fmt: skip
    sequence = None
    index = 0  # the next part's index in the segment being described
    pending_extinf: float | None = None
    for line in lines[1:]:
        assert line.strip() == line and line, f"blank or padded line {line!r}"
        tag, _, value = line[1:].partition(":") if line[0] == "#" else ("", "", "")
        if tag in once:
            assert tag not in found.tags, f"{tag} twice"
            found.tags[tag] = value
        if tag == "EXT-X-MEDIA-SEQUENCE":
            assert not found.segments and not found.parts, "§4.4.3.2: before the first segment"
            sequence = int(value)
        elif tag == "EXT-X-TARGETDURATION":
            found.target = int(value)
        elif tag == "EXT-X-PART-INF":
            found.part_target = float(attributes(value)["PART-TARGET"])
        elif tag == "EXT-X-PART":
            assert sequence is not None and found.part_target is not None, "§4.4.4.9: PART-INF"
            attrs_ = attributes(value)
            duration = float(attrs_["DURATION"])
            assert 0 < duration <= found.part_target + 1e-9, f"§4.4.4.9: part {duration} s"
            assert attrs_["URI"] not in found.parts.values(), "a part listed twice"
            found.parts[(sequence, index)] = attrs_["URI"]
            found.part_durations[(sequence, index)] = duration
            index += 1
        elif tag == "EXT-X-PRELOAD-HINT":
            attrs_ = attributes(value)
            assert attrs_["TYPE"] == "PART" and found.hint is None, "§4.4.5.3: one part hint"
            found.hint = attrs_["URI"]
        elif tag == "EXTINF":
            pending_extinf = float(value.split(",")[0])
        elif tag == "EXT-X-ENDLIST":
            found.ended = True
        elif not line.startswith("#"):
            assert pending_extinf is not None and sequence is not None, (
                f"URI without EXTINF: {line}"
            )
            assert found.hint is None, "§4.4.5.3: the hint comes after every segment"
            found.segments[sequence] = line
            found.durations[sequence] = pending_extinf
            # §4.4.4.9: a segment's parts add up to it.
            own = [d for (n, _), d in found.part_durations.items() if n == sequence]
            if own:
                assert math.isclose(sum(own), pending_extinf, abs_tol=1e-3), (sequence, own)
            sequence, index, pending_extinf = sequence + 1, 0, None
    assert found.target, "§4.4.3.1: EXT-X-TARGETDURATION is required"
    for duration in found.durations.values():
        assert round(duration) <= found.target, "§4.4.3.1: EXTINF rounded ≤ target"
    if found.parts or found.hint:
        control = attributes(found.tags.get("EXT-X-SERVER-CONTROL", ""))
        assert control.get("CAN-BLOCK-RELOAD") == "YES", "§4.4.3.8: parts need blocking reload"
        assert found.part_target is not None
        hold_back = float(control["PART-HOLD-BACK"])
        assert hold_back >= 3 * found.part_target - 1e-9, "§4.4.3.8: PART-HOLD-BACK ≥ 3 parts"
        assert not found.ended, "parts and hints only while live"
    if found.ended:
        assert lines[-1] == "#EXT-X-ENDLIST"
    return found
