"""Fallback streams: which stream a live listener hears, decided without I/O.

A listener asks for a stream; configuration (``[[icecast.fallback]]``) names, per stream id
pattern, a *fallback* stream to play while that one has no source (before it starts, after
its source dropped, after it finished). The fallback may have its own fallback: the *chain*
of a stream is the stream, its fallback, that one's fallback, and so on. The listener hears
the first stream of its chain that is *on air* (a source sending), and moves along the chain
as sources come and go, without being disconnected (:mod:`mmstream.server._switch`).

``override`` (Icecast's ``fallback-override``): when a stream earlier in the chain comes back
on air, its listeners move back to it. Without it they stay where they are while that stays
on air.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence

import attrs
from attrs import validators as v

__all__ = ["FallbackRule", "choose", "fallback_chain", "overrides"]


@attrs.frozen
class FallbackRule:
    """``[[icecast.fallback]]``: streams matching ``pattern`` fall back to ``fallback``."""

    #: An fnmatch pattern over stream ids (``live-*``) or one id.
    pattern: str = attrs.field(validator=v.min_len(1))
    #: The stream to play while a matching stream is off air.
    fallback: str = attrs.field(validator=v.min_len(1))
    #: Move listeners back when the stream returns (Icecast's ``fallback-override``).
    override: bool = True


def _rule_for(stream_id: str, rules: Sequence[FallbackRule]) -> FallbackRule | None:
    for rule in rules:
        if fnmatch.fnmatchcase(stream_id, rule.pattern):
            return rule
    return None


def fallback_chain(stream_id: str, rules: Sequence[FallbackRule]) -> tuple[str, ...]:
    """``stream_id`` and its fallbacks in order (the first matching rule of each). A chain
    that comes back to a stream already in it stops there: a loop is cut, never followed
    (``a → b → a`` gives ``(a, b)``)."""
    chain = [stream_id]
    while (rule := _rule_for(chain[-1], rules)) is not None and rule.fallback not in chain:
        chain.append(rule.fallback)
    return tuple(chain)


def overrides(stream_id: str, rules: Sequence[FallbackRule]) -> bool:
    """Whether listeners of ``stream_id`` go back to it when it returns."""
    rule = _rule_for(stream_id, rules)
    return rule is None or rule.override


def choose(
    chain: Sequence[str],
    on_air: Callable[[str], bool],
    current: str | None,
    *,
    override: bool,
) -> str | None:
    """What a listener of ``chain[0]`` now on ``current`` (None: nothing yet) should hear:
    ``current`` while it is on air unless ``override`` and an earlier stream is back; else
    the first stream of the chain on air; None if none is."""
    first = next((stream for stream in chain if on_air(stream)), None)
    if current is None or current not in chain or not on_air(current):
        return first
    if override:
        return first
    return current
