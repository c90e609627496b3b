from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from mmstream.config import CacheConfig
from mmstream.errors import ConfigError
from mmstream.streams import open_stream_manager


async def test_missing_directory_is_created_private(
    configure: Callable[..., CacheConfig], tmp_path: Path
) -> None:
    config = configure(directory=tmp_path / "a" / "b" / "cache")
    async with open_stream_manager(config) as manager:
        assert manager.directory == config.directory
    assert os.stat(config.directory).st_mode & 0o777 == 0o700


async def test_symlinked_directory_is_refused(
    configure: Callable[..., CacheConfig], tmp_path: Path
) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(ConfigError, match="symlink"):
        async with open_stream_manager(configure(directory=tmp_path / "link")):
            pass
    assert os.listdir(real) == []


@pytest.mark.parametrize("mode", [0o770, 0o720, 0o703, 0o777])
async def test_writable_by_others_is_refused(
    configure: Callable[..., CacheConfig], tmp_path: Path, mode: int
) -> None:
    directory = tmp_path / "cache"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(ConfigError, match="chmod 700"):
        async with open_stream_manager(configure(directory=directory)):
            pass
    assert os.listdir(directory) == []


async def test_readable_by_others_is_accepted(
    configure: Callable[..., CacheConfig], tmp_path: Path
) -> None:
    directory = tmp_path / "cache"
    directory.mkdir()
    directory.chmod(0o755)
    async with open_stream_manager(configure(directory=directory)):
        pass


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory away")
async def test_directory_of_another_user_is_refused(
    configure: Callable[..., CacheConfig], tmp_path: Path
) -> None:
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o700)
    os.chown(directory, 12345, 12345)
    with pytest.raises(ConfigError, match="owned by uid 12345"):
        async with open_stream_manager(configure(directory=directory)):
            pass


async def test_a_file_is_not_a_directory(
    configure: Callable[..., CacheConfig], tmp_path: Path
) -> None:
    (tmp_path / "cache").write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        async with open_stream_manager(configure(directory=tmp_path / "cache")):
            pass
