"""The object-storage tier (docs/tiering.md): READY streams copied to an S3-compatible
bucket, so they outlive the node that recorded them.

Importing this package imports no S3 client: :func:`open_object_store` imports the S3
implementation when a configured tier asks for it, so a server with the tier off loads
nothing of it.
"""

from __future__ import annotations

from ..config import TierConfig
from ._credentials import AwsCredentials as AwsCredentials
from ._credentials import find_credentials as find_credentials
from ._store import MAX_PARTS as MAX_PARTS
from ._store import ObjectNotFoundError as ObjectNotFoundError
from ._store import ObjectStore as ObjectStore
from ._store import part_size_for as part_size_for

__all__ = [
    "MAX_PARTS",
    "AwsCredentials",
    "ObjectNotFoundError",
    "ObjectStore",
    "find_credentials",
    "open_object_store",
    "part_size_for",
]


def open_object_store(config: TierConfig) -> ObjectStore:
    """The S3 store ``config`` names (imports the S3 client on first use)."""
    from ._s3 import S3ObjectStore  # only a configured tier loads the client

    return S3ObjectStore(config)
