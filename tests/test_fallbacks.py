"""Which stream a listener with fallbacks hears: the decisions, without sockets."""

from __future__ import annotations

import pytest

from mmstream.config import ConfigError, config_from_dict
from mmstream.fallbacks import FallbackRule, choose, fallback_chain, overrides

RULES = (
    FallbackRule("live-*", "jingles"),
    FallbackRule("jingles", "silence"),
    FallbackRule("loop-a", "loop-b"),
    FallbackRule("loop-b", "loop-a"),
    FallbackRule("self", "self"),
    FallbackRule("sticky", "jingles", override=False),
)


def test_the_chain_follows_the_first_matching_rule() -> None:
    assert fallback_chain("live-1", RULES) == ("live-1", "jingles", "silence")
    assert fallback_chain("jingles", RULES) == ("jingles", "silence")
    assert fallback_chain("other", RULES) == ("other",)


def test_a_loop_is_cut_where_it_comes_back() -> None:
    assert fallback_chain("loop-a", RULES) == ("loop-a", "loop-b")
    assert fallback_chain("loop-b", RULES) == ("loop-b", "loop-a")
    assert fallback_chain("self", RULES) == ("self",)


def test_override_is_per_rule() -> None:
    assert overrides("live-1", RULES)
    assert not overrides("sticky", RULES)
    assert overrides("other", RULES)


CHAIN = ("live", "jingles", "silence")


@pytest.mark.parametrize(
    ("on_air", "current", "override", "expected"),
    [
        ({"live", "jingles"}, None, True, "live"),  # a new listener: the first on air
        ({"jingles"}, None, True, "jingles"),  # before the source starts
        (set(), None, True, None),  # nothing on air
        ({"jingles", "silence"}, "live", True, "jingles"),  # the source dropped
        ({"silence"}, "live", True, "silence"),  # down the chain
        ({"live", "jingles"}, "jingles", True, "live"),  # back with override
        ({"live", "jingles"}, "jingles", False, "jingles"),  # stays without it
        ({"live"}, "jingles", False, "live"),  # ...until its stream goes
        ({"live", "jingles"}, "elsewhere", True, "live"),  # not in the chain: restart
        ({"jingles"}, "jingles", True, "jingles"),  # nothing to do
    ],
)
def test_choose(on_air: set[str], current: str | None, override: bool, expected: str) -> None:
    assert choose(CHAIN, on_air.__contains__, current, override=override) == expected


def test_config_reads_fallback_rules() -> None:
    config = config_from_dict(
        {"icecast": {"fallback": [{"pattern": "live-*", "fallback": "jingles"}]}}
    )
    assert config.icecast.fallback == (FallbackRule("live-*", "jingles"),)
    rule = {"pattern": "a", "fallback": "b", "override": False}
    config = config_from_dict({"icecast": {"fallback": [rule]}})
    assert config.icecast.fallback == (FallbackRule("a", "b", override=False),)
    with pytest.raises(ConfigError, match="override: expected true or false"):
        config_from_dict({"icecast": {"fallback": [{**rule, "override": 1}]}})
    with pytest.raises(ConfigError, match="fallback"):
        config_from_dict({"icecast": {"fallback": [{"pattern": "live-*"}]}})
    with pytest.raises(ConfigError, match="fallback"):
        config_from_dict({"icecast": {"fallback": [{"pattern": "", "fallback": "x"}]}})
