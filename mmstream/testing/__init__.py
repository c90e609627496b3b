"""Reusable checks for code built on mmstream, shipped so that plugins can run them.

:class:`CacheConformance` is the backend conformance suite: every built-in backend and any
third-party one subclass it, provide a ``make_cache`` fixture, and pytest runs the whole
contract of :class:`~mmstream.cache.MemoryMappedCache` against real files. Importing this
package needs pytest (the ``test`` extra); the server never imports it.
"""

from __future__ import annotations

from ._conformance import SEGMENT as SEGMENT
from ._conformance import CacheConformance as CacheConformance
from ._conformance import pattern as pattern

__all__ = ["SEGMENT", "CacheConformance", "pattern"]
