"""An S3-compatible server on 127.0.0.1 for tests (moto in server mode), and the environment that
points the standard AWS clients (pyarrow's among them) at it."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def s3_server(buckets: tuple[str, ...] = ("bucket",)):
    """Yields the environment variables (endpoint, test credentials, region) of a fresh server."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing-key-id",
           "AWS_SECRET_ACCESS_KEY": "testing-secret-do-not-log", "AWS_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("the S3 test server did not start")
                time.sleep(0.1)
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            import boto3

            s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
            for b in buckets:
                s3.create_bucket(Bucket=b)
            yield env
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    finally:
        proc.terminate()
        proc.wait(timeout=10)
