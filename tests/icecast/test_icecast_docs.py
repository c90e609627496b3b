"""docs/icecast.md is the radio features' reference: every route the Icecast modules serve
and every setting they read is named there (as the README is for the whole config)."""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from mmstream.config import ClusterConfig, IcecastConfig, MountConfig
from mmstream.fallbacks import FallbackRule

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "icecast.md").read_text()
#: The modules that register the Icecast routes.
ROUTES = ("mmstream/server/_icecast.py", "mmstream/server/_icecast_admin.py")
#: Settings of other sections the radio features read.
ELSEWHERE = ("server.cors_origins", "server.trusted_proxies", "cache.writer_timeout")


def test_every_icecast_setting_is_documented() -> None:
    names = [field.name for cls in (IcecastConfig, MountConfig, FallbackRule)
             for field in attrs.fields(cls)]  # fmt: skip
    names += [f"cluster.{field.name}" for field in attrs.fields(ClusterConfig)]
    names += ELSEWHERE
    missing = [name for name in names if f"`{name}`" not in DOC]
    assert not missing, f"not in docs/icecast.md: {missing}"


def test_every_icecast_route_is_documented() -> None:
    routes = []
    for module in ROUTES:
        source = (REPO / module).read_text()
        routes += re.findall(r'router\.add(?:_takeover)?\(\s*"(\w+)", "([^"]+)"', source)
    assert len(routes) >= 10, routes  # the pattern still finds them
    missing = []
    for method, path in routes:
        path = path.replace("{stream_id}", "{id}")
        if path not in DOC or (method != "GET" and f"{method} {path}" not in DOC):
            missing.append(f"{method} {path}")
    assert not missing, f"not in docs/icecast.md: {missing}"
