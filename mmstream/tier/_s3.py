"""The S3 implementation of :class:`~mmstream.tier.ObjectStore`, on obstore.

obstore was chosen by measurement against boto3 in worker threads (docs/tiering.md): the
same wall time against the same endpoint with a third to a half of the client CPU, typed, and
no dependencies of its own. Its synchronous calls release the GIL while they wait, so the
tier runs them in trio worker threads as the manager runs fsyncs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, NoReturn

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from ..cache import Buffer
from ..config import TierConfig
from ..errors import StorageError
from ._credentials import AwsCredentials, find_credentials
from ._store import ObjectNotFoundError, part_size_for

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Credential, S3CredentialProvider

__all__ = ["S3ObjectStore", "parts_in_flight"]

#: Longest error text passed on from the client (its messages can quote a whole response).
_ERROR_TEXT = 300
#: Parts of one upload in flight at once hold at most this much memory (at least one part).
UPLOAD_MEMORY = 64 * 1024 * 1024
MAX_PARTS_IN_FLIGHT = 4


def parts_in_flight(part: int) -> int:
    """Up to four parts at a time, fewer when parts are large: a 5 TiB stream's 525 MiB
    parts go one at a time, so an upload holds max(64 MiB, one part) of memory."""
    return max(1, min(MAX_PARTS_IN_FLIGHT, UPLOAD_MEMORY // part))


#: What in a response could carry (part of) a credential, redacted from errors after it.
_SIGNED = re.compile(
    r"(AWSAccessKeyId>|<StringToSign>|<CanonicalRequest>|Credential=|Signature=|"
    r"x-amz-security-token:?|X-Amz-Security-Token=?|Authorization:?)[^ <>,;&]*"
)


class S3ObjectStore:
    """One bucket and prefix of an S3-compatible service."""

    def __init__(self, config: TierConfig, credentials: AwsCredentials | None = None) -> None:
        self._config = config
        found = credentials if credentials is not None else find_credentials()
        #: Never in an error message: the client's messages can quote a response body,
        #: and S3 echoes the key id, the string to sign and signed headers in some.
        self._secrets = tuple(
            value
            for value in (
                (found.access_key_id, found.secret_access_key, found.session_token)
                if found is not None
                else ()
            )
            if value
        )
        client: ClientConfig = {
            "timeout": timedelta(seconds=config.request_timeout),
            "connect_timeout": timedelta(seconds=min(config.request_timeout, 5.0)),
            "allow_http": config.endpoint.startswith("http://"),
        }
        # The client retries a failed request a little; the tier retries a failed upload
        # with its own backoff, so a long outage is not spent inside one call.
        retry: RetryConfig = {
            "max_retries": 2,
            "retry_timeout": timedelta(seconds=config.request_timeout),
        }
        options: dict[str, str] = {"region": config.region}
        if config.endpoint:
            options["endpoint"] = config.endpoint.rstrip("/")
        self._store = S3Store(
            config.bucket,
            prefix=config.prefix.rstrip("/") or None,
            client_options=client,
            retry_config=retry,
            credential_provider=_static(found) if found is not None else None,
            virtual_hosted_style_request=False,
            **options,  # type: ignore[arg-type]
        )

    def __repr__(self) -> str:
        where = self._config.endpoint or "aws"
        return f"<S3ObjectStore {where} bucket={self._config.bucket!r}>"

    def _raise(self, what: str, exc: BaseException, *, missing: str | None = None) -> NoReturn:
        """Raise the short error for ``exc``: on a read, a missing object; on a write (where
        ``missing`` says what it means), a missing bucket, which is the world's fault. The
        client's text is cut to one line, and nothing of the credentials stays in it."""
        if isinstance(exc, FileNotFoundError):
            if missing is None:
                raise ObjectNotFoundError(f"{what}: no such object") from None
            raise StorageError(f"{what}: {missing}") from None
        text = " ".join(str(exc).split())
        for secret in self._secrets:
            text = text.replace(secret, "***")
        text = _SIGNED.sub(lambda m: m.group(1) + "***", text)[:_ERROR_TEXT]
        raise StorageError(f"{what}: {text or type(exc).__name__}") from None

    def put(
        self, key: str, chunks: Iterable[Buffer], *, size: int, attributes: Mapping[str, str]
    ) -> None:
        part = part_size_for(size, self._config.part_size)
        source = _Source(chunks)
        try:
            if size > part:
                obstore.put(self._store, key, source, attributes=dict(attributes),
                            use_multipart=True, chunk_size=part,
                            max_concurrency=parts_in_flight(part))  # fmt: skip
            else:
                body = b"".join(bytes(chunk) for chunk in source)
                obstore.put(self._store, key, body, attributes=dict(attributes),
                            use_multipart=False)  # fmt: skip
        except (BaseError, OSError) as exc:
            if source.error is not None:  # the source failed, not the bucket: say so
                raise source.error from None
            self._raise(f"uploading {key}", exc, missing="the bucket does not exist")
        if source.error is not None:
            raise source.error

    def get(self, key: str) -> bytes:
        try:
            return obstore.get(self._store, key).bytes().to_bytes()
        except (BaseError, OSError) as exc:
            self._raise(f"reading {key}", exc)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            return obstore.get_range(self._store, key, start=start, length=length).to_bytes()
        except (BaseError, OSError) as exc:
            self._raise(f"reading {key} at {start}", exc)

    def delete(self, key: str) -> None:
        try:
            obstore.delete(self._store, key)
        except FileNotFoundError:
            return
        except (BaseError, OSError) as exc:
            self._raise(f"deleting {key}", exc)

    def check(self) -> None:
        try:
            obstore.head(self._store, ".mmstream-probe")
        except FileNotFoundError:
            return  # the bucket answered
        except (BaseError, OSError) as exc:
            self._raise(f"reaching bucket {self._config.bucket}", exc)


class _Source:
    """The chunks of an upload, remembering what the source itself raised: the client
    turns it into its own error, and the caller must see the original (a stream deleted
    meanwhile, a checksum mismatch), not a bucket failure."""

    def __init__(self, chunks: Iterable[Buffer]) -> None:
        self._chunks = iter(chunks)
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator[Buffer]:
        return self

    def __next__(self) -> Buffer:
        try:
            return next(self._chunks)
        except StopIteration:
            raise
        except BaseException as exc:
            self.error = exc
            raise


def _static(credentials: AwsCredentials) -> S3CredentialProvider:
    def provide() -> S3Credential:
        return {
            "access_key_id": credentials.access_key_id,
            "secret_access_key": credentials.secret_access_key,
            "token": credentials.session_token,
            "expires_at": None,
        }

    return provide
