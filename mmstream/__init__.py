"""mmstream: cache live audio streams on disk through memory-mapped files.

Any client can read any byte range back, while the upload is still running or long after.
"""

from __future__ import annotations

import functools

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    # Looked up on first use: reading the installed metadata costs a client command
    # (``mmstream put``) more than a tenth of its start-up.
    if name == "__version__":
        return _version()
    raise AttributeError(f"module 'mmstream' has no attribute {name!r}")


@functools.cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mmstream")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"
