"""The S3 object store against a real S3 endpoint (moto's server mode in its own process)."""

from __future__ import annotations

import hashlib
import http.server
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_process import modules_after_start

from mmstream.cache import MiB
from mmstream.config import TierConfig
from mmstream.errors import StorageError
from mmstream.tier import (
    MAX_PARTS,
    AwsCredentials,
    ObjectNotFoundError,
    ObjectStore,
    find_credentials,
    open_object_store,
    part_size_for,
)


def test_store_meets_the_protocol(tier_config: TierConfig) -> None:
    assert isinstance(open_object_store(tier_config), ObjectStore)


def test_multipart_put_reads_back_byte_identical_with_ranges(tier_config: TierConfig) -> None:
    store = open_object_store(tier_config)
    data = os.urandom(12 * MiB + 12345)  # three parts of 5 MiB, the last one short
    chunks = [data[i : i + MiB] for i in range(0, len(data), MiB)]
    attributes = {"sha256": hashlib.sha256(data).hexdigest(), "Content-Type": "audio/ogg"}
    store.put("s/a.data", chunks, size=len(data), attributes=attributes)
    assert store.get("s/a.data") == data
    for start, length in ((0, 1), (5 * MiB - 3, 7), (len(data) - 10, 10), (len(data) - 4, 100)):
        assert store.get_range("s/a.data", start, length) == data[start : start + length]
    assert store.get_range("s/a.data", 5, 0) == b""


def test_a_failing_source_leaves_no_object(tier_config: TierConfig) -> None:
    """The multipart completion is the commit: an upload whose source fails half-way (a
    checksum mismatch, a read error) leaves nothing visible under the key."""
    store = open_object_store(tier_config)

    def chunks() -> Iterator[bytes]:
        yield os.urandom(6 * MiB)  # more than one part went up
        raise OSError("the disk failed")

    with pytest.raises((StorageError, OSError)):
        store.put("s/broken.data", chunks(), size=12 * MiB, attributes={})
    with pytest.raises(ObjectNotFoundError):
        store.get("s/broken.data")


def test_missing_objects_and_idempotent_delete(tier_config: TierConfig) -> None:
    store = open_object_store(tier_config)
    with pytest.raises(ObjectNotFoundError):
        store.get("nothing")
    with pytest.raises(ObjectNotFoundError):
        store.get_range("nothing", 0, 10)
    store.put("x", [b"abc"], size=3, attributes={})
    store.delete("x")
    store.delete("x")
    with pytest.raises(ObjectNotFoundError):
        store.get("x")
    store.check()


def test_unreachable_endpoint_is_a_short_storage_error(aws_env: None) -> None:
    from tier_moto import free_port

    config = TierConfig(
        enabled=True,
        endpoint=f"http://127.0.0.1:{free_port()}",
        bucket="nowhere",
        request_timeout=1.0,
    )
    with pytest.raises(StorageError) as info:
        open_object_store(config).check()
    message = str(info.value)
    assert "\n" not in message and len(message) < 400
    assert "testing-secret" not in message


def test_wrong_bucket_is_an_error(tier_config: TierConfig) -> None:
    store = open_object_store(TierConfig(enabled=True, endpoint=tier_config.endpoint,
                                         bucket="no-such-bucket-here"))  # fmt: skip
    with pytest.raises(StorageError):
        store.put("k", [b"x"], size=1, attributes={})


def test_an_upload_holds_bounded_memory() -> None:
    from mmstream.tier._s3 import UPLOAD_MEMORY, parts_in_flight

    assert parts_in_flight(5 * MiB) == 4
    assert parts_in_flight(16 * MiB) == 4
    assert parts_in_flight(32 * MiB) == 2
    huge_part = part_size_for(5 * 1024**4, 16 * MiB)
    assert parts_in_flight(huge_part) == 1
    for part in (5 * MiB, 16 * MiB, 20 * MiB, 64 * MiB, huge_part):
        assert parts_in_flight(part) * part <= max(UPLOAD_MEMORY, part)


def test_part_size_grows_for_huge_streams() -> None:
    assert part_size_for(1, 16 * MiB) == 16 * MiB
    assert part_size_for(16 * MiB * MAX_PARTS, 16 * MiB) == 16 * MiB
    huge = 5 * 1024**4  # 5 TiB, S3's largest object
    part = part_size_for(huge, 16 * MiB)
    assert part * MAX_PARTS >= huge and part % MiB == 0 and part <= 5 * 1024**3


# -- credentials -----------------------------------------------------------------------


def test_credentials_from_environment_first(tmp_path: Path) -> None:
    env = {"AWS_ACCESS_KEY_ID": "AKIAENV", "AWS_SECRET_ACCESS_KEY": "s3cr3t-env",
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}  # fmt: skip
    found = find_credentials(env)
    assert found == AwsCredentials("AKIAENV", "s3cr3t-env", None, "environment")
    assert "s3cr3t" not in repr(found) and "AKIAENV" not in repr(found)


def test_credentials_from_the_shared_file_and_profile(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    path.write_text(
        "[default]\naws_access_key_id = AKIADEF\naws_secret_access_key = def-secret\n"
        "[other]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = other-secret\n"
        "aws_session_token = tok\n"
    )
    env = {"AWS_SHARED_CREDENTIALS_FILE": str(path)}
    found = find_credentials(env)
    assert found is not None and found.access_key_id == "AKIADEF"
    other = find_credentials({**env, "AWS_PROFILE": "other"})
    assert other is not None and other.session_token == "tok"
    assert find_credentials({**env, "AWS_PROFILE": "missing"}) is None
    assert find_credentials({"HOME": str(tmp_path / "nohome")}) is None


def test_a_broken_credentials_file_error_quotes_none_of_it(tmp_path: Path) -> None:
    from mmstream.errors import ConfigError

    path = tmp_path / "credentials"
    path.write_text("aws_secret_access_key = leaked-secret\n[x\n")
    with pytest.raises(ConfigError) as info:
        find_credentials({"AWS_SHARED_CREDENTIALS_FILE": str(path)})
    assert "leaked-secret" not in str(info.value) and str(path) in str(info.value)


def test_credentials_never_reach_the_log(
    tier_config: TierConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = open_object_store(tier_config)
    store.put("k", [b"x"], size=1, attributes={})
    assert store.get("k") == b"x"
    assert "testing-secret" not in caplog.text and "testing-secret" not in repr(store)


def test_nothing_s3_is_imported_with_the_tier_off(tmp_path: Path) -> None:
    """A server with the tier off (the default) loads no S3 client."""
    loaded = modules_after_start(tmp_path, "mmstream.cli, mmstream.tier")
    s3 = ("obstore", "boto3", "botocore")
    assert [m for m in loaded if m.split(".")[0] in s3 or m == "mmstream.tier._s3"] == []


class _EchoingS3(http.server.BaseHTTPRequestHandler):
    """Answers every request as S3 answers a bad signature: 403 with a body that quotes the
    key id, the canonical request (with the session token header) and the string to sign."""

    def _refuse(self) -> None:
        token = self.headers.get("x-amz-security-token", "")
        body = (
            "<Error><Code>SignatureDoesNotMatch</Code><AWSAccessKeyId>AKIATESTKEYID0001"
            "</AWSAccessKeyId><CanonicalRequest>GET /b/k host:x\nx-amz-security-token:"
            f"{token}\n</CanonicalRequest><StringToSign>AWS4-HMAC-SHA256 "
            f"{self.headers.get('Authorization', '')}</StringToSign></Error>"
        ).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _refuse

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_errors_quoting_a_response_carry_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 quotes the key id and signed headers back in some errors, and the client passes
    the body on: none of the credentials may reach the message (nor so the log)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTKEYID0001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-key")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-tok-123456")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoingS3)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        config = TierConfig(enabled=True, endpoint=f"http://127.0.0.1:{server.server_port}",
                            bucket="echo", request_timeout=2.0)  # fmt: skip
        store = open_object_store(config)
        for call in (lambda: store.get("k"), lambda: store.get_range("k", 0, 5),
                     lambda: store.put("k", [b"x"], size=1, attributes={}), store.check):  # fmt: skip
            with pytest.raises(StorageError) as info:
                call()
            message = str(info.value)
            for leaked in ("AKIATESTKEYID0001", "very-secret-key", "session-tok-123456"):
                assert leaked not in message, message
            assert "Signature=" not in message or "Signature=***" in message
    finally:
        server.shutdown()
        server.server_close()
