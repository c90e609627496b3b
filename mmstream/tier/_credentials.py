"""AWS credentials from the standard places only: the environment, then the shared
credentials file. Never from mmstream's config (it is often world-readable and pasted into
bug reports) and never written to a log.

The lookup follows the AWS CLI: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (with
``AWS_SESSION_TOKEN``), else the profile ``AWS_PROFILE`` (default ``default``) of
``AWS_SHARED_CREDENTIALS_FILE`` (default ``~/.aws/credentials``). With neither, the S3
client's own chain (web identity, container and instance metadata) applies.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from pathlib import Path

import attrs

from ..errors import ConfigError

__all__ = ["AwsCredentials", "find_credentials"]


@attrs.frozen
class AwsCredentials:
    """The keys the tier signs its S3 requests with; never shown in a repr or a log (only
    ``source`` is), because config dumps and tracebacks end up in bug reports."""

    access_key_id: str = attrs.field(repr=False)
    secret_access_key: str = attrs.field(repr=False)
    session_token: str | None = attrs.field(default=None, repr=False)
    #: Where they were found, for the log ("environment", or the file and profile).
    source: str = "environment"


def find_credentials(environ: Mapping[str, str] = os.environ) -> AwsCredentials | None:
    """Credentials from the environment or the shared file, or None (the client's chain).
    A shared file that exists but cannot be parsed is a :class:`ConfigError` naming it."""
    key, secret = environ.get("AWS_ACCESS_KEY_ID"), environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return AwsCredentials(key, secret, environ.get("AWS_SESSION_TOKEN") or None)
    default = Path(environ.get("HOME", "~")) / ".aws" / "credentials"
    path = Path(environ.get("AWS_SHARED_CREDENTIALS_FILE") or default).expanduser()
    profile = environ.get("AWS_PROFILE") or "default"
    parser = configparser.RawConfigParser()
    try:
        found = parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        # The parser's message may quote a line of the file: say only where it is.
        raise ConfigError(
            f"AWS credentials file {path} cannot be parsed ({type(exc).__name__})"
        ) from None
    if not found or not parser.has_section(profile):
        return None
    section = parser[profile]
    key, secret = section.get("aws_access_key_id"), section.get("aws_secret_access_key")
    if not key or not secret:
        return None
    token = section.get("aws_session_token") or None
    return AwsCredentials(key, secret, token, source=f"{path} [{profile}]")
