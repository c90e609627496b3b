"""mmstream: cache live audio streams on disk through memory-mapped files.

Any client can read any byte range back, while the upload is still running or long after.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mmstream")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
