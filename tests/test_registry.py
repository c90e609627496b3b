from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from mmstream.errors import BackendNotFoundError
from mmstream.registry import BackendRegistry


def test_builtin_backends_are_found_through_entry_points() -> None:
    names = BackendRegistry().names()
    assert {"file", "mmap"} <= set(names)


def test_the_mmap_backend_loads_by_name() -> None:
    from mmstream_mmap import MmapCache

    assert BackendRegistry().load("mmap") is MmapCache
    info = {info.name: info for info in BackendRegistry().describe()}["mmap"]
    assert info.ok
    assert info.distribution == "mmstream-mmap"


def test_broken_plugin_is_listed_as_broken_not_fatal() -> None:
    registry = BackendRegistry(
        entry_points=[
            EntryPoint("good", "mmstream_file:FileCache", "mmstream.backends"),
            EntryPoint("broken", "no_such_module_xyz:Cache", "mmstream.backends"),
        ]
    )
    infos = {info.name: info for info in registry.describe()}
    assert infos["good"].ok
    assert not infos["broken"].ok
    assert "no_such_module_xyz" in (infos["broken"].error or "")


def test_loading_the_broken_backend_is_a_clear_error() -> None:
    registry = BackendRegistry(
        entry_points=[EntryPoint("broken", "no_such_module_xyz:Cache", "mmstream.backends")]
    )
    with pytest.raises(BackendNotFoundError, match="failed to load") as info:
        registry.load("broken")
    assert info.value.available == ["broken"]


def test_unknown_name_lists_what_is_installed() -> None:
    with pytest.raises(BackendNotFoundError, match=r"installed backends: .*file") as info:
        BackendRegistry().load("nope")
    assert "file" in info.value.available


def test_module_reference() -> None:
    from mmstream_file import FileCache

    assert BackendRegistry().load("mmstream_file:FileCache") is FileCache
    with pytest.raises(BackendNotFoundError):
        BackendRegistry().load("mmstream_file:Missing")
