"""boto3 (in worker threads) against obstore as the tier's S3 client: one multipart upload
and ranged GETs against moto's server on loopback; wall time and the client's CPU time.

Usage: python bench/tier_clients.py [SIZE_BYTES]   (needs boto3, moto[server], obstore)
Figures: docs/tiering.md.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import botocore.config
import obstore
from obstore.store import S3Store

BUCKET = "bench-bucket"
PART = 8 << 20
ROUNDS = 3
GETS = 200
RANGE = 64 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_listening(port: int) -> None:
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
        except OSError:
            time.sleep(0.1)
        else:
            return
    raise RuntimeError("moto_server did not start")


def main(size: int) -> None:
    port = free_port()
    moto = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port)
        run(f"http://127.0.0.1:{port}", size)
    finally:
        moto.terminate()
        moto.wait()


def run(endpoint: str, size: int) -> None:
    s3 = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
        aws_secret_access_key="bench", config=botocore.config.Config(max_pool_connections=16),
    )  # fmt: skip
    s3.create_bucket(Bucket=BUCKET)
    store = S3Store(BUCKET, endpoint=endpoint, region="us-east-1", access_key_id="bench",
                    secret_access_key="bench", client_options={"allow_http": True})  # fmt: skip
    data = os.urandom(size)

    def boto_upload(key: str) -> None:
        upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]

        def part(index: int) -> dict[str, object]:
            body = data[index * PART : (index + 1) * PART]
            reply = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload,
                                   PartNumber=index + 1, Body=body)  # fmt: skip
            return {"PartNumber": index + 1, "ETag": reply["ETag"]}

        with ThreadPoolExecutor(4) as pool:
            parts = list(pool.map(part, range(-(-size // PART))))
        s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload,
                                     MultipartUpload={"Parts": parts})  # fmt: skip

    def obstore_upload(key: str) -> None:
        obstore.put(store, key, memoryview(data), use_multipart=True, chunk_size=PART,
                    max_concurrency=4)  # fmt: skip

    uploads: dict[str, Callable[[str], None]] = {"boto3": boto_upload, "obstore": obstore_upload}
    speed: dict[str, list[float]] = {name: [] for name in uploads}
    cpu: dict[str, list[float]] = {name: [] for name in uploads}
    for round_ in range(ROUNDS):
        for name, upload in uploads.items():
            wall, used = time.perf_counter(), time.process_time()
            upload(f"{name}{round_}")
            speed[name].append(size / (time.perf_counter() - wall) / 1e6)
            cpu[name].append((time.process_time() - used) / size * 2**30)
    assert s3.get_object(Bucket=BUCKET, Key="obstore0")["Body"].read() == data
    for name in uploads:
        print(f"multipart upload of {size >> 20} MiB, {name}: "
              f"{statistics.median(speed[name]):.0f} MB/s (median of {ROUNDS}), "
              f"client {statistics.median(cpu[name]):.2f} CPU-s/GiB")  # fmt: skip

    def boto_get(offset: int) -> bytes:
        rng = f"bytes={offset}-{offset + RANGE - 1}"
        body: bytes = s3.get_object(Bucket=BUCKET, Key="boto30", Range=rng)["Body"].read()
        return body

    def obstore_get(offset: int) -> bytes:
        return obstore.get_range(store, "boto30", start=offset, length=RANGE).to_bytes()

    gets: dict[str, Callable[[int], bytes]] = {"boto3": boto_get, "obstore": obstore_get}
    for name, get in gets.items():
        latencies, used = [], time.process_time()
        for i in range(GETS):
            offset = (i * 7919 * 4096) % (size - RANGE)
            wall = time.perf_counter()
            assert get(offset) == data[offset : offset + RANGE]
            latencies.append(time.perf_counter() - wall)
        latencies.sort()
        print(f"ranged GET of {RANGE >> 10} KiB, {name}: p50 "
              f"{latencies[GETS // 2] * 1e3:.1f} ms, p99 {latencies[GETS * 99 // 100] * 1e3:.1f} ms, "
              f"client {(time.process_time() - used) / GETS * 1e3:.2f} ms CPU per GET")  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 64 << 20)
