"""Cache backends found through the entry-point group ``mmstream.backends``.

The built-in ``mmap`` and ``file`` backends are separate distributions registered exactly as
a third-party plugin is; the core imports no backend module by name. Discovery is lazy:
listing reads entry-point metadata only; a backend is imported when it is loaded. A plugin that
fails to import is logged and skipped while listing, but loading the backend the config names
raises :class:`~mmstream.errors.BackendNotFoundError` saying what failed and what is installed.

A name may also be a ``package.module:Factory`` reference, for a backend not registered at all.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points

import attrs

from .cache import CacheFactory
from .errors import BackendNotFoundError

__all__ = ["ENTRY_POINT_GROUP", "BackendInfo", "BackendRegistry"]

ENTRY_POINT_GROUP = "mmstream.backends"
log = logging.getLogger(__name__)


@attrs.frozen
class BackendInfo:
    """One entry point of a backend group as ``mmstream backends`` lists it; ``error`` holds
    why it failed to load, so a broken plugin is shown (and skipped) instead of hiding the
    others."""

    name: str
    value: str
    distribution: str | None
    version: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@attrs.define
class BackendRegistry:
    """Entry points of one group; pass ``entry_points`` to test with a fixed set."""

    group: str = ENTRY_POINT_GROUP
    _entry_points: Iterable[EntryPoint] | None = attrs.field(default=None, alias="entry_points")
    _loaded: dict[str, CacheFactory] = attrs.field(factory=dict, init=False)

    def _points(self) -> dict[str, EntryPoint]:
        points = self._entry_points
        if points is None:
            points = entry_points(group=self.group)
        return {ep.name: ep for ep in points}

    def names(self) -> list[str]:
        return sorted(self._points())

    def describe(self) -> list[BackendInfo]:
        """Every registered backend, importing each to report whether it loads."""
        infos = []
        for name, ep in sorted(self._points().items()):
            dist = ep.dist
            error = None
            try:
                self._load_entry_point(ep)
            except Exception as exc:  # a broken plugin must not break the listing
                log.warning("cache backend %r (%s) failed to load: %s", name, ep.value, exc)
                error = f"{type(exc).__name__}: {exc}"
            infos.append(
                BackendInfo(
                    name=name,
                    value=ep.value,
                    distribution=dist.name if dist else None,
                    version=dist.version if dist else None,
                    error=error,
                )
            )
        return infos

    def load(self, name: str) -> CacheFactory:
        """The factory registered as ``name``, or named by ``module:attribute``."""
        if name in self._loaded:
            return self._loaded[name]
        points = self._points()
        if name in points:
            try:
                factory = self._load_entry_point(points[name])
            except Exception as exc:
                raise BackendNotFoundError(
                    f"cache backend {name!r} is installed but failed to load "
                    f"({type(exc).__name__}: {exc}); reinstall its distribution",
                    available=points,
                ) from exc
        elif ":" in name:
            factory = self._load_reference(name, points)
        else:
            raise BackendNotFoundError(
                f"no cache backend named {name!r}; install one that registers it in the "
                f"{self.group!r} entry-point group, or name a 'module:Factory'",
                available=points,
            )
        self._loaded[name] = factory
        return factory

    def _load_entry_point(self, ep: EntryPoint) -> CacheFactory:
        factory = ep.load()
        if not callable(factory):
            raise TypeError(f"{ep.value} is not callable")
        return factory  # type: ignore[no-any-return]

    def _load_reference(self, reference: str, points: Iterable[str]) -> CacheFactory:
        module_name, _, attribute = reference.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise BackendNotFoundError(
                f"cannot load cache backend {reference!r}: {exc}", available=points
            ) from exc
        if not callable(factory):
            raise BackendNotFoundError(f"{reference!r} is not callable", available=points)
        return factory  # type: ignore[no-any-return]
