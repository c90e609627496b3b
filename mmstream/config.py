"""The configuration tree, loaded from TOML into frozen attrs classes with cattrs.

Selection order for the file: ``--config PATH`` → ``$MMSTREAM_CONFIG`` → built-in defaults.
An unknown key or a bad value raises :class:`~mmstream.errors.ConfigError` naming the key
(``cache.initial_size: ...``). Sizes accept an integer of bytes or a string such as
``"64 MiB"``; durations are seconds (float).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import logging
import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Any, Literal, NewType

import attrs
import cattrs
from attrs import validators as v
from cattrs.preconf.tomllib import make_converter

from .cache import (
    DEFAULT_BATCH_LIMIT,
    DEFAULT_INITIAL_SIZE,
    DEFAULT_SEGMENT_SIZE,
    CacheOptions,
    GiB,
    KiB,
    MiB,
    MmapWrite,
)
from .errors import ConfigError
from .fallbacks import FallbackRule

__all__ = [
    "AuthConfig",
    "ByteSize",
    "CacheConfig",
    "ClusterConfig",
    "Config",
    "HlsConfig",
    "IcecastConfig",
    "LoggingConfig",
    "MmapConfig",
    "MountConfig",
    "ServerConfig",
    "TierConfig",
    "TokenConfig",
    "config_path_from_env",
    "load_config",
    "parse_size",
]

CONFIG_ENV = "MMSTREAM_CONFIG"

log = logging.getLogger("mmstream.config")

#: An integer number of bytes; in TOML also a string like ``"64 MiB"``.
ByteSize = NewType("ByteSize", int)

_UNITS = {"": 1, "b": 1, "k": KiB, "kb": 1000, "kib": KiB, "m": MiB, "mb": 1000**2,
          "mib": MiB, "g": GiB, "gb": 1000**3, "gib": GiB, "t": 1024 * GiB,
          "tb": 1000**4, "tib": 1024 * GiB}  # fmt: skip
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")


def parse_size(value: object) -> ByteSize:
    """``4096``, ``"4096"``, ``"64 MiB"``, ``"1GiB"`` → bytes."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size in bytes, got {value!r}")
    if isinstance(value, int):
        return ByteSize(value)
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match and match.group(2).lower() in _UNITS:
            return ByteSize(int(match.group(1)) * _UNITS[match.group(2).lower()])
    raise ValueError(f"expected a size such as 65536 or '64 MiB', got {value!r}")


def _networks(instance: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for entry in value:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(
                f"{attribute.name}: {entry!r} is not an address or a network like 10.0.0.0/8"
            ) from None


def _min(bound: float) -> Any:
    return v.ge(bound)


SyncPolicy = Literal["always", "interval", "finalize"]
Transport = Literal["websockets", "trio-websocket"]
LogFormat = Literal["text", "json", "logfmt"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


@attrs.frozen
class MmapConfig:
    """``[cache.mmap]``: the mmap backend's options, kept apart so that ``[cache]`` holds
    what every backend does. Other backends ignore them, except ``segment_size``, which
    also caps their growth step (:func:`mmstream.cache.grown_size`)."""

    #: The mapping window: a stream file is mapped in segments of this size (a multiple of
    #: the allocation granularity), so streams past 2 GiB work. Also the largest step any
    #: backend's file grows by, the file backend's included (:func:`~mmstream.cache.grown_size`).
    segment_size: ByteSize = attrs.field(default=ByteSize(DEFAULT_SEGMENT_SIZE), validator=_min(1))
    #: How it writes: ``pwrite`` into the page cache the mapping shares, or ``mapping``
    #: (copies into the mapped pages); reads use the mapping either way.
    write: MmapWrite = "pwrite"
    #: With ``write = "mapping"``: pre-fault pages ahead of the writer.
    prefault: bool = True


#: ``[cache]`` keys that moved to ``[cache.mmap]``: old name → new name. Still read, with a
#: deprecation warning, so that existing config files keep working.
MOVED_TO_MMAP = {"segment_size": "segment_size", "mmap_write": "write"}


@attrs.frozen
class CacheConfig:
    """``[cache]``: where and how streams are stored (backend, quota, durability)."""

    directory: Path = Path("cache")
    backend: str = attrs.field(default="mmap", validator=v.min_len(1))
    initial_size: ByteSize = attrs.field(default=ByteSize(DEFAULT_INITIAL_SIZE), validator=_min(1))
    max_cache_size: ByteSize = attrs.field(default=ByteSize(8 * GiB), validator=_min(1))
    batch_limit: int = attrs.field(default=DEFAULT_BATCH_LIMIT, validator=[_min(1), v.le(100_000)])
    #: When written bytes are made durable: after every write, every ``sync_interval``
    #: seconds, or only at finalize.
    sync_policy: SyncPolicy = "interval"
    sync_interval: float = attrs.field(default=1.0, validator=v.gt(0))
    #: Evict READY streams (least recently accessed first) when the cache is full,
    #: or reject the write with a quota error.
    on_full: Literal["evict", "reject"] = "evict"
    #: UPLOADING streams idle longer than this many seconds expire (0 disables).
    upload_ttl: float = attrs.field(default=24 * 3600.0, validator=_min(0))
    #: A stream's writer that has written nothing for this many seconds may be replaced by
    #: a new one (a connection that died unnoticed cannot hold its stream longer).
    writer_timeout: float = attrs.field(default=10.0, validator=v.gt(0))
    #: Streams whose time index media points (and header) are held in memory at once; the
    #: least recently sought beyond it are dropped and rebuilt on their next seek.
    time_indexes: int = attrs.field(default=64, validator=[_min(1), v.le(100_000)])
    #: The mmap backend's own options.
    mmap: MmapConfig = attrs.Factory(MmapConfig)

    def options(self) -> CacheOptions:
        return CacheOptions(
            segment_size=self.mmap.segment_size,
            batch_limit=self.batch_limit,
            mmap_write=self.mmap.write,
            prefault=self.mmap.prefault,
        )


@attrs.frozen
class ServerConfig:
    """``[server]``: the listening port, transports, limits and acknowledgements (docs/server.md)."""

    host: str = "127.0.0.1"
    port: int = attrs.field(default=8765, validator=[_min(0), v.le(65535)])
    transport: Transport = "websockets"
    #: Largest WebSocket message accepted (1009 close beyond it) and largest read frame sent.
    max_message_size: ByteSize = attrs.field(default=ByteSize(4 * MiB), validator=_min(1024))
    #: trio-websocket reads the socket in pieces of this size; 4 KiB (its default) is slow.
    receive_buffer_size: ByteSize = attrs.field(default=ByteSize(256 * KiB), validator=_min(1024))
    handshake_timeout: float = attrs.field(default=10.0, validator=v.gt(0))
    idle_timeout: float = attrs.field(default=300.0, validator=v.gt(0))
    max_connections: int = attrs.field(default=1024, validator=_min(1))
    max_connections_per_ip: int = attrs.field(default=256, validator=_min(1))
    #: Messages queued per connection before the transport stops reading (the bounded channel).
    request_queue: int = attrs.field(default=16, validator=_min(1))
    #: Bytes one WebSocket may hold received and not yet applied (queued messages and the
    #: frame still arriving) before the server stops reading it; at least
    #: ``max_message_size`` + 64 KiB is used, so the largest message can always arrive.
    connection_buffer: ByteSize = attrs.field(default=ByteSize(8 * MiB), validator=_min(1))
    #: Bytes all WebSockets together may hold so; beyond it a connection holding more than
    #: 512 KiB is not read until others drain (docs/reliability.md, "Memory").
    receive_budget: ByteSize = attrs.field(default=ByteSize(128 * MiB), validator=_min(1))
    #: Acknowledge uploaded data every this many bytes (or on request, or at ack_interval).
    ack_bytes: ByteSize = attrs.field(default=ByteSize(1 * MiB), validator=_min(1))
    ack_interval: float = attrs.field(default=0.05, validator=v.gt(0))
    shutdown_grace: float = attrs.field(default=10.0, validator=_min(0))
    #: Origins whose pages may read HTTP responses (CORS; ``"*"``: any); empty: CORS off.
    cors_origins: tuple[str, ...] = ()
    #: Proxies (addresses or networks, ``"10.0.0.0/8"``) whose PROXY protocol v1 line and
    #: ``X-Forwarded-For`` header name the client; nobody else's are believed.
    trusted_proxies: tuple[str, ...] = attrs.field(default=(), validator=_networks)


SourceEnd = Literal["finalize", "keep"]
SlowListener = Literal["skip", "disconnect"]


HookPolicy = Literal["allow", "deny"]


def _hook_url(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value and not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", value):
        raise ValueError(f"{attribute.name} must be an http:// or https:// URL, got {value!r}")


@attrs.frozen
class MountConfig:
    """Settings for the live streams whose id matches ``streams`` (fnmatch; the first
    matching entry of ``icecast.mounts`` wins), as Icecast's ``<mount>``."""

    streams: str = attrs.field(validator=v.min_len(1))
    #: Live listeners at once; 0 = unlimited.
    max_listeners: int = attrs.field(default=0, validator=_min(0))


@attrs.frozen
class IcecastConfig:
    """Icecast-compatible ingest (``PUT``/``SOURCE``) and live listeners (docs/icecast.md)."""

    #: When a source's body ends cleanly: "finalize" the stream, or "keep" it UPLOADING.
    source_end: SourceEnd = "finalize"
    #: Seconds without a byte from a source before it counts as dropped.
    source_timeout: float = attrs.field(default=10.0, validator=v.gt(0))
    #: Recent audio a new listener gets at once (Icecast's burst-size).
    burst_size: ByteSize = attrs.field(default=ByteSize(64 * KiB), validator=_min(0))
    #: Bytes a listener may fall behind the live edge (Icecast's queue-size).
    queue_size: ByteSize = attrs.field(default=ByteSize(512 * KiB), validator=_min(4 * KiB))
    #: What a live-edge listener past ``queue_size`` gets: a jump to the live edge, or
    #: disconnected (a listener that gave ``?offset=`` catches up from the cache instead).
    slow_listener: SlowListener = "skip"
    #: Seconds between sends to the listeners of a stream (latency vs. CPU); 0 = every write.
    send_interval: float = attrs.field(default=0.05, validator=[_min(0), v.le(1)])
    #: Audio bytes between in-band title blocks for listeners that send ``Icy-MetaData: 1``.
    icy_metaint: int = attrs.field(default=16000, validator=[v.ge(256), v.le(1 << 20)])
    #: Icecast's URL listener auth: POSTed before a live listener is admitted (it must
    #: answer 200 with ``icecast-auth-user: 1``) and when it leaves; empty: no hook.
    listener_add: str = attrs.field(default="", validator=_hook_url)
    listener_remove: str = attrs.field(default="", validator=_hook_url)
    #: Seconds a hook may take; a hook that takes longer or cannot be reached decides as
    #: ``auth_failure`` says: "deny" the listener (as Icecast) or "allow" it.
    auth_timeout: float = attrs.field(default=5.0, validator=[v.gt(0), v.le(60)])
    auth_failure: HookPolicy = "deny"
    #: Live listeners of one stream at once; 0 = unlimited. ``mounts`` may set it per stream.
    max_listeners: int = attrs.field(default=0, validator=_min(0))
    mounts: tuple[MountConfig, ...] = ()

    def mount(self, stream_id: str) -> MountConfig:
        """The settings of ``stream_id``: the first matching ``mounts`` entry, else the
        defaults above."""
        for mount in self.mounts:
            if fnmatch.fnmatchcase(stream_id, mount.streams):
                return mount
        return MountConfig("*", max_listeners=self.max_listeners)

    #: ``[[icecast.fallback]]`` rules: what a stream's listeners hear while it has no
    #: source (docs/icecast.md, "Fallbacks"); the first rule whose pattern matches applies.
    fallback: tuple[FallbackRule, ...] = ()


def _peer_urls(value: object) -> tuple[str, ...]:
    """``["h1:9001", "ws://h2:9002"]`` or ``"h1:9001,h2:9002"`` → WebSocket base URLs."""
    items = value.split(",") if isinstance(value, str) else list(typing.cast("list[object]", value))
    urls = []
    for item in items:
        text = _expect_str(item).strip()
        if not text:
            raise ValueError("a peer is an empty string")
        urls.append(text if "://" in text else f"ws://{text}")
    return tuple(urls)


@attrs.frozen
class ClusterConfig:
    """The other workers of a cluster, for relays (docs/scaling.md, "Relays")."""

    #: Every worker's WebSocket address (``host:port`` or ``ws://host:port``); this worker's
    #: own may be listed too. A live ``GET`` for a stream this worker does not hold is
    #: relayed from the peer uploading it. Empty: no relays.
    peers: tuple[str, ...] = attrs.field(default=(), converter=_peer_urls)
    #: The token a relay sends its owner in ``hello`` (read scope) when auth is on; empty:
    #: none.
    token: str = attrs.field(default="", repr=False)
    #: Seconds to find a stream's owner among the peers before the listener is redirected.
    lookup_timeout: float = attrs.field(default=5.0, validator=v.gt(0))


#: LL-HLS requests held waiting for a part, in all, and from one client address (here, not
#: in web/llhls.py, so that loading the config does not load HLS).
DEFAULT_BLOCKED = 2048
DEFAULT_BLOCKED_PER_CLIENT = 128


@attrs.frozen
class HlsConfig:
    """``[hls]``: what LL-HLS requests may make the server hold (docs/hls.md, "Low latency").
    A blocking playlist reload or a preload-hinted part is held until its part is final;
    beyond these counts the request is answered ``503`` with ``Retry-After`` at once."""

    #: Requests held waiting for a part at once, in all.
    max_blocked: int = attrs.field(default=DEFAULT_BLOCKED, validator=[_min(1), v.le(1_000_000)])
    #: ...and from one client address (behind a proxy: the address it names, if trusted).
    max_blocked_per_ip: int = attrs.field(
        default=DEFAULT_BLOCKED_PER_CLIENT, validator=[_min(1), v.le(1_000_000)]
    )


@attrs.frozen
class LoggingConfig:
    """``[logging]``: the level and format of the server's log."""

    level: LogLevel = "INFO"
    format: LogFormat = "text"


Scope = Literal["read", "write", "admin"]


@attrs.frozen
class TokenConfig:
    """One access token: what it may do (``scopes``) to which streams (an fnmatch pattern
    over stream ids)."""

    token: str = attrs.field(repr=False, validator=v.min_len(16))
    scopes: tuple[Scope, ...] = attrs.field(default=("read", "write"), validator=v.min_len(1))
    streams: str = attrs.field(default="*", validator=v.min_len(1))


def _empty_or_long_key(instance: AuthConfig, attribute: attrs.Attribute[str], value: str) -> None:
    if value and len(value) < 32:
        raise ValueError(f"'{attribute.name}' must be empty (a random key) or 32+ characters")


@attrs.frozen
class AuthConfig:
    """``[auth]``: access tokens and allowed browser origins; off while no token is listed."""

    #: Access control is on when at least one token is listed.
    tokens: tuple[TokenConfig, ...] = ()
    #: Origins (``https://example.org``) allowed to open WebSockets; empty allows any.
    origins: tuple[str, ...] = ()
    #: The key HLS capabilities are signed with (docs/hls.md, *Access control*), 32+
    #: characters; empty: a random key per process (capabilities end with a restart).
    capability_key: str = attrs.field(default="", repr=False, validator=_empty_or_long_key)
    #: Seconds an HLS capability lasts at least (a finished stream's: plus its duration).
    capability_lifetime: float = attrs.field(default=3600.0, validator=v.gt(0))


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_ENDPOINT = re.compile(r"https?://[^/@\s?#]+/?")
_PREFIX = re.compile(r"[A-Za-z0-9!_.*'()/-]*")
#: S3's bounds on a multipart upload's parts (the last part may be smaller).
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * GiB


def _bucket_name(instance: TierConfig, attribute: attrs.Attribute[str], value: str) -> None:
    if value and not _BUCKET.fullmatch(value):
        raise ValueError(
            f"'{attribute.name}' must be an S3 bucket name: 3-63 lowercase letters, digits, "
            f"dots and hyphens, starting and ending with a letter or digit; got {value!r}"
        )


def _endpoint_url(instance: TierConfig, attribute: attrs.Attribute[str], value: str) -> None:
    # No user:password@ part: credentials come from the AWS environment, never the config
    # (and the message does not repeat them).
    if "@" in value:
        raise ValueError(
            f"'{attribute.name}' must not hold credentials (user:password@); they come from "
            "the AWS environment or ~/.aws/credentials"
        )
    if value and not _ENDPOINT.fullmatch(value):
        raise ValueError(
            f"'{attribute.name}' must be http(s)://host[:port] with no path or query; got {value!r}"
        )


def _key_prefix(instance: TierConfig, attribute: attrs.Attribute[str], value: str) -> None:
    if not _PREFIX.fullmatch(value) or value.startswith("/") or "//" in value:
        raise ValueError(
            f"'{attribute.name}' must be a key prefix of letters, digits and !_.*'()/- "
            f"without a leading or doubled slash; got {value!r}"
        )


@attrs.frozen
class TierConfig:
    """The object-storage tier (docs/tiering.md): READY streams copied to an S3-compatible
    bucket. Off unless ``enabled``; credentials come only from the standard AWS environment
    variables and shared files, never from here."""

    enabled: bool = False
    #: ``http(s)://host:port`` of an S3-compatible service; empty means AWS itself.
    endpoint: str = attrs.field(default="", validator=_endpoint_url)
    bucket: str = attrs.field(default="", validator=_bucket_name)
    #: Prepended to every key, so several clusters (or other data) can share a bucket.
    prefix: str = attrs.field(default="mmstream/", validator=_key_prefix)
    region: str = attrs.field(default="us-east-1", validator=v.matches_re(r"[a-z0-9-]{1,32}"))
    #: Streams uploaded at the same time.
    upload_concurrency: int = attrs.field(default=2, validator=[_min(1), v.le(64)])
    #: Multipart part size; raised for a stream so large it would need more than 10,000 parts.
    part_size: ByteSize = attrs.field(
        default=ByteSize(16 * MiB), validator=[_min(MIN_PART_SIZE), v.le(ByteSize(MAX_PART_SIZE))]
    )
    #: Seconds one request to the bucket may take (connect and transfer) before it is retried.
    request_timeout: float = attrs.field(default=30.0, validator=v.gt(0))

    def __attrs_post_init__(self) -> None:
        if self.enabled and not self.bucket:
            raise ValueError("'bucket' is required when the tier is enabled")


@attrs.frozen
class Config:
    """The whole configuration file, one attrs class per table."""

    cache: CacheConfig = attrs.Factory(CacheConfig)
    server: ServerConfig = attrs.Factory(ServerConfig)
    icecast: IcecastConfig = attrs.Factory(IcecastConfig)
    logging: LoggingConfig = attrs.Factory(LoggingConfig)
    auth: AuthConfig = attrs.Factory(AuthConfig)
    tier: TierConfig = attrs.Factory(TierConfig)
    cluster: ClusterConfig = attrs.Factory(ClusterConfig)
    hls: HlsConfig = attrs.Factory(HlsConfig)


def _make_converter() -> cattrs.Converter:
    converter = make_converter(forbid_extra_keys=True)
    converter.register_structure_hook(ByteSize, lambda value, _: parse_size(value))
    converter.register_structure_hook(Path, lambda value, _: Path(_expect_str(value)))
    # cattrs would call int(), float() or str() on anything (true → 1, 80.5 → 80, 5 → "5")
    # and word a failure as Python does; a config file deserves its own words.
    converter.register_structure_hook(str, lambda value, _: _expect_str(value))
    converter.register_structure_hook(int, lambda value, _: _expect_int(value))
    converter.register_structure_hook(float, lambda value, _: _expect_number(value))
    converter.register_structure_hook(bool, lambda value, _: _expect_bool(value))
    converter.register_structure_hook_func(_is_literal, _expect_choice)
    return converter


def _is_literal(type_: object) -> bool:
    origin: object = typing.get_origin(type_)
    return origin is Literal


def _show(value: object) -> str:
    """A value as the TOML file spells it (``true``, ``'sometimes'``, ``80.5``)."""
    return str(value).lower() if isinstance(value, bool) else repr(value)


def _expect_str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_show(value)}")
    return value


def _expect_int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"expected an integer, got {_show(value)}")
    return value


def _expect_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_show(value)}")
    return value


def _expect_number(value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"expected a number, got {_show(value)}")
    return float(value)


def _expect_choice(value: object, type_: Any) -> object:
    choices = typing.get_args(type_)
    if value not in choices or isinstance(value, bool):
        names = ", ".join(str(choice) for choice in choices)
        raise ValueError(f"must be one of {names}; got {_show(value)}")
    return value


_converter = _make_converter()


def config_from_dict(data: dict[str, Any], *, source: str = "config") -> Config:
    data = _move_mmap_keys(data, source)
    try:
        return _converter.structure(data, Config)
    except cattrs.BaseValidationError as exc:
        problems = cattrs.transform_error(exc, path="$", format_exception=_describe)
        raise ConfigError(f"{source}: " + "; ".join(_tidy(p) for p in problems)) from None


def _move_mmap_keys(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Read the ``[cache]`` keys that moved to ``[cache.mmap]`` where they are now, saying
    so once per key; both at once is an error (which one was meant?)."""
    cache = data.get("cache")
    if not isinstance(cache, dict) or not MOVED_TO_MMAP.keys() & cache.keys():
        return data
    mmap = cache.get("mmap", {})
    if not isinstance(mmap, dict):
        return data  # cattrs reports the table's type
    data = dict(data)
    cache = data["cache"] = dict(cache)  # the caller's tables stay as they were
    mmap = cache["mmap"] = dict(mmap)
    for old, new in MOVED_TO_MMAP.items():
        if old not in cache:
            continue
        if new in mmap:
            raise ConfigError(f"{source}: cache.{old}: give only cache.mmap.{new} (it replaces it)")
        mmap[new] = cache.pop(old)
        log.warning(
            "%s: cache.%s is deprecated, write it as cache.mmap.%s (only the mmap backend "
            "reads it)",
            source,
            old,
            new,
        )
    return data


def _describe(exc: BaseException, type_: type | None) -> str:
    if isinstance(exc, KeyError):
        return "required key missing"
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        # One line per key, each led by the key so that _tidy completes its path.
        return "\n".join(
            f"'{key}' unknown key; {_suggestion(key, exc.cl)}" for key in sorted(exc.extra_fields)
        )
    if isinstance(exc, ValueError | TypeError) and str(exc):
        return str(exc)
    return cattrs.v.format_exception(exc, type_)


def _suggestion(key: str, cls: type) -> str:
    """The nearest valid key, or (none near) the keys there are."""
    import difflib  # only for a misspelt key: a server that starts never needs it

    names = [field.name for field in attrs.fields(cls)]
    nearest = difflib.get_close_matches(key, names, n=1)
    if nearest:
        return f"did you mean {nearest[0]}?"
    return "the keys here are " + ", ".join(names)


_KEYED_MESSAGE = re.compile(r"^'(\w+)' (.*)$")


def _tidy(problem: str) -> str:
    # cattrs says "invalid value for type, expected int @ $.cache.initial_size";
    # lead with the key, which is what the reader is looking for. attrs validators run
    # in __init__, so cattrs places their errors on the section; their message starts
    # with the attribute's name, which completes the key (so do unknown keys' lines).
    message, _, where = problem.rpartition(" @ ")
    if not message:
        return problem
    section = where.removeprefix("$.").removeprefix("$")
    tidied = []
    for line in message.split("\n"):
        key = section
        if match := _KEYED_MESSAGE.match(line):
            key = f"{key}.{match.group(1)}" if key else match.group(1)
            line = match.group(2)
        tidied.append(f"{key or '(top level)'}: {line}")
    return "; ".join(tidied)


def config_path_from_env() -> Path | None:
    value = os.environ.get(CONFIG_ENV)
    return Path(value) if value else None


def load_config(path: Path | str | None = None, **overrides: Any) -> Config:
    """Load ``path`` (or ``$MMSTREAM_CONFIG``, or defaults). Relative ``cache.directory``
    is taken relative to the current directory, as a command-line user expects."""
    chosen = Path(path) if path is not None else config_path_from_env()
    data: dict[str, Any] = {}
    source = "defaults"
    if chosen is not None:
        source = str(chosen)
        try:
            with chosen.open("rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {chosen}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{chosen}: not valid TOML: {exc}") from None
    config = config_from_dict(data, source=source)
    return evolve_config(config, **overrides) if overrides else config


def evolve_config(config: Config, **overrides: Any) -> Config:
    """Apply dotted overrides such as ``{"server.port": 9000}`` (from command-line flags)."""
    data = _converter.unstructure(config)
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if section not in data or key not in data[section]:
            raise ConfigError(f"unknown setting {dotted}")
        data[section][key] = str(value) if isinstance(value, Path) else value
    return config_from_dict(data, source="command line")
