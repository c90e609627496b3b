from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mmstream.cache import GiB, MiB
from mmstream.config import ByteSize, Config, MmapConfig, load_config, parse_size
from mmstream.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_match_the_spec() -> None:
    config = Config()
    assert config.cache.initial_size == 64 * MiB
    assert config.cache.max_cache_size == 8 * GiB
    assert config.cache.mmap.segment_size == 1 * GiB
    assert config.cache.batch_limit == 1000


def test_shipped_config_equals_defaults() -> None:
    assert load_config(REPO / "conf" / "mmstream.toml") == Config()


@pytest.mark.parametrize(
    ("text", "expected"),
    [(4096, 4096), ("4096", 4096), ("64 MiB", 64 * MiB), ("1GiB", GiB), ("2kb", 2000)],
)
def test_parse_size(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "-1", "12 parsecs", True, 1.5, "1.5 GiB"])
def test_parse_size_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[cache]\ninitial_size = 'lots'\n", "cache.initial_size"),
        ("[cache]\nbatch_limit = 0\n", "cache.batch_limit"),
        ("[cache]\nsync_policy = 'sometimes'\n", "cache.sync_policy"),
        ("[cache]\nno_such_key = 1\n", "no_such_key"),
        ("[server]\nport = 70000\n", "server.port"),
        ("[hls]\nmax_blocked_per_ip = 0\n", "hls.max_blocked_per_ip: must be >= 1"),
        ("[nonsense]\n", "nonsense"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(path)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[cache]\nsync_policy = 'sometimes'\n",
         "cache.sync_policy: must be one of always, interval, finalize; got 'sometimes'"),
        ("[server]\nport = 'eighty'\n", "server.port: expected an integer, got 'eighty'"),
        ("[server]\nport = true\n", "server.port: expected an integer, got true"),
        ("[server]\nport = 80.5\n", "server.port: expected an integer, got 80.5"),
        ("[server]\nhost = 5\n", "server.host: expected a string, got 5"),
        ("[server]\nhandshake_timeout = 'soon'\n",
         "server.handshake_timeout: expected a number, got 'soon'"),
        ("[cache]\nsync_polcy = 'always'\n",
         "cache.sync_polcy: unknown key; did you mean sync_policy?"),
        ("[servr]\nport = 1\n", "servr: unknown key; did you mean server?"),
        ("[nonsense]\n",
         "nonsense: unknown key; the keys here are cache, server, icecast, logging, auth, tier, cluster, hls"),
        ("[[auth.tokens]]\ntoken = 'x'\nscopes = ['red']\n",
         "auth.tokens[0].scopes[0]: must be one of read, write, admin; got 'red'"),
        ("[logging]\nlevel = 'info'\nformt = 'json'\n",
         "logging.level: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL; got 'info'; "
         "logging.formt: unknown key; did you mean format?"),
        ("[tier]\nenabled = true\n", "tier.bucket: is required when the tier is enabled"),
        ("[tier]\nenabled = 'yes'\n", "tier.enabled: expected true or false, got 'yes'"),
        ("[tier]\nbucket = 'My_Bucket'\n",
         "tier.bucket: must be an S3 bucket name: 3-63 lowercase letters, digits, dots and "
         "hyphens, starting and ending with a letter or digit; got 'My_Bucket'"),
        ("[tier]\nendpoint = 'http://key:secret@s3.local:9000'\n",
         "tier.endpoint: must not hold credentials (user:password@); they come from the AWS "
         "environment or ~/.aws/credentials"),
        ("[tier]\nendpoint = 's3.local:9000/x'\n",
         "tier.endpoint: must be http(s)://host[:port] with no path or query; "
         "got 's3.local:9000/x'"),
        ("[tier]\npart_size = '1 MiB'\n", "tier.part_size: must be >= 5242880: 1048576"),
        ("[tier]\nprefix = '/abs'\n",
         "tier.prefix: must be a key prefix of letters, digits and !_.*'()/- without a "
         "leading or doubled slash; got '/abs'"),
        ("[tier]\nbuckets = 'x'\n", "tier.buckets: unknown key; did you mean bucket?"),
    ],
)  # fmt: skip
def test_config_errors_in_plain_words(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: {message}"


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[cache\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_env_var_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[cache]\nbackend = 'file'\n")
    monkeypatch.setenv("MMSTREAM_CONFIG", str(path))
    config = load_config(**{"server.port": 9999, "cache.directory": tmp_path})
    assert config.cache.backend == "file"
    assert config.server.port == 9999
    assert config.cache.directory == tmp_path
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(**{"server.nope": 1})


def test_readme_documents_every_key() -> None:
    """The README's configuration table is the reference: a new key must be documented."""
    import attrs

    readme = (REPO / "README.md").read_text()
    shipped = (REPO / "conf" / "mmstream.toml").read_text()
    missing = []

    def check(table: type, prefix: str) -> None:
        for key in attrs.fields(attrs.resolve_types(table)):
            name = f"{prefix}{key.name}"
            if isinstance(key.type, type) and attrs.has(key.type):  # a table: its keys
                if f"\n[{name}]" not in shipped:
                    missing.append(f"conf/mmstream.toml: [{name}]")
                check(key.type, f"{name}.")
                continue
            if prefix and f"`{name}`" not in readme:
                missing.append(name)
            if prefix and f"\n{key.name} = " not in shipped:
                missing.append(f"conf/mmstream.toml: {name}")

    check(Config, "")
    assert not missing, f"undocumented settings: {missing}"


def test_mmap_only_keys_live_in_their_own_table(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        "[cache]\nbackend = 'file'\n[cache.mmap]\nsegment_size = '2 GiB'\nwrite = 'mapping'\n"
    )
    config = load_config(path)
    assert config.cache.mmap == MmapConfig(segment_size=ByteSize(2 * GiB), write="mapping")
    options = config.cache.options()
    assert (options.segment_size, options.mmap_write) == (2 * GiB, "mapping")
    path.write_text("[cache.mmap]\nwrit = 'mapping'\n")
    with pytest.raises(ConfigError, match=r"cache\.mmap\.writ: unknown key; did you mean write\?"):
        load_config(path)


def test_the_old_cache_keys_still_work_with_a_deprecation_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``cache.segment_size`` and ``cache.mmap_write`` moved to ``[cache.mmap]``; a config
    file written before still loads, and the log says where the keys are now."""
    path = tmp_path / "old.toml"
    path.write_text("[cache]\nsegment_size = '512 MiB'\nmmap_write = 'mapping'\n")
    with caplog.at_level(logging.WARNING, logger="mmstream.config"):
        config = load_config(path)
    assert config.cache.mmap == MmapConfig(segment_size=ByteSize(512 * MiB), write="mapping")
    warned = [r.getMessage() for r in caplog.records]
    assert any(
        "cache.segment_size is deprecated, write it as cache.mmap.segment_size" in w for w in warned
    )
    assert any("cache.mmap_write is deprecated, write it as cache.mmap.write" in w for w in warned)
    path.write_text("[cache]\nmmap_write = 'mapping'\n[cache.mmap]\nwrite = 'pwrite'\n")
    with pytest.raises(ConfigError, match=r"give only cache\.mmap\.write"):
        load_config(path)
