"""The object-storage tier (docs/tiering.md): READY streams copied to an S3-compatible
bucket, so they outlive the node that recorded them.

Importing this package imports no S3 client: :func:`open_object_store` imports the S3
implementation when a configured tier asks for it, so a server with the tier off loads
nothing of it.
"""

from __future__ import annotations

import trio

from ..config import TierConfig
from ..errors import ConfigError
from ..metrics import Metrics
from ..streams import StreamManager
from ._credentials import AwsCredentials as AwsCredentials
from ._credentials import find_credentials as find_credentials
from ._manifest import Manifest as Manifest
from ._manifest import data_key as data_key
from ._manifest import manifest_key as manifest_key
from ._store import MAX_PARTS as MAX_PARTS
from ._store import ObjectNotFoundError as ObjectNotFoundError
from ._store import ObjectStore as ObjectStore
from ._store import part_size_for as part_size_for
from ._tier import Tier as Tier

__all__ = [
    "MAX_PARTS",
    "AwsCredentials",
    "Manifest",
    "ObjectNotFoundError",
    "ObjectStore",
    "Tier",
    "data_key",
    "find_credentials",
    "manifest_key",
    "open_object_store",
    "part_size_for",
    "serve_tier",
]


def open_object_store(config: TierConfig) -> ObjectStore:
    """The S3 store ``config`` names (imports the S3 client on first use)."""
    try:
        from ._s3 import S3ObjectStore  # only a configured tier loads the client
    except ImportError as exc:
        raise ConfigError(
            f"tier.enabled is true but its S3 client cannot be imported ({exc}); "
            "install it with: pip install 'mmstream[tier]'"
        ) from None
    return S3ObjectStore(config)


async def serve_tier(
    config: TierConfig,
    manager: StreamManager,
    metrics: Metrics | None = None,
    *,
    task_status: trio.TaskStatus[Tier] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the tier for ``manager`` until cancelled; ``nursery.start`` returns the
    :class:`Tier` once it is attached (an unreachable bucket is logged, not fatal)."""
    tier = Tier(open_object_store(config), config, metrics)

    async def run(task_status: trio.TaskStatus[None]) -> None:
        await tier.run(manager, task_status=task_status)

    async with trio.open_nursery() as nursery:
        await nursery.start(run)
        task_status.started(tier)
