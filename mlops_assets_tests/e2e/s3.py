"""A real S3 API on 127.0.0.1 for end-to-end tests: ``moto_server`` in its own process group.

``aws_environment`` gives the variables every S3 client of the stack (s3fs/aiobotocore for the
lake and the landing zone, dvc-s3 for the DVC remote, boto3 for MLflow's artifact store)
needs to talk to that server and to nothing else: the endpoint, fake credentials, no instance
metadata service and no ``~/.aws`` configuration.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_assets_tests.e2e.processes import HOST, LoggedServer, free_port, spawn_logged

STARTUP_TIMEOUT = 30.0  # moto_server answers within a couple of seconds
REGION = "us-east-1"
# AWS settings a developer (or CI) may have exported; none of them may reach the tests.
AWS_CONTEXT_VARS = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_REGION",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_ENDPOINT_URL_S3",  # a service-specific endpoint would win over AWS_ENDPOINT_URL
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_CA_BUNDLE",
    "MLFLOW_S3_ENDPOINT_URL",  # MLflow must find the endpoint through AWS_ENDPOINT_URL alone
    "MLFLOW_S3_IGNORE_TLS",
)


def aws_environment(endpoint: str, scratch: Path) -> dict[str, str]:
    """The AWS variables pointing every client at ``endpoint`` with fake credentials.

    ``scratch`` is a folder whose (non-existent) ``aws-config`` and ``aws-credentials`` files
    replace ``~/.aws/config`` and ``~/.aws/credentials``.
    """
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(scratch / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(scratch / "aws-credentials"),
    }


def forget_s3_clients() -> None:
    """Drops cached S3 filesystems and clients (they keep the endpoint they were built with).

    fsspec caches one ``S3FileSystem`` per set of storage options (the lake, the landing zone
    and the DVC remote all share it) and MLflow caches its boto3 client; neither is keyed on
    ``AWS_ENDPOINT_URL``.
    """
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    with contextlib.suppress(ImportError, AttributeError):
        from mlflow.store.artifact import s3_artifact_repo

        s3_artifact_repo._cached_get_s3_client.cache_clear()


@dataclass
class MotoServer(LoggedServer):
    """A running ``moto_server`` (its own process group) and its log file."""

    NAME = "moto_server"
    STOP_GRACE = 10.0

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @classmethod
    def start(cls, root: Path) -> MotoServer:
        """Starts the server in the background; ``wait_ready`` waits for it."""
        root.mkdir(parents=True, exist_ok=True)
        port = free_port()
        script = Path(sys.executable).with_name("moto_server")
        entry = [str(script)] if script.exists() else [sys.executable, "-m", "moto.server"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(PYTHONUNBUFFERED="1", **aws_environment(f"http://{HOST}:{port}", root))
        log_path = root / "moto_server.log"
        command = [*entry, "-H", HOST, "-p", str(port)]
        return cls(spawn_logged(command, cwd=root, env=env, log_path=log_path), port, log_path)

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> float:
        """Polls the S3 API (ListBuckets) until it answers 200; returns the seconds waited."""
        return self.wait_http(f"{self.endpoint}/", timeout, interval=0.2)

    def client(self) -> Any:
        """A boto3 S3 client bound to this server (independent of the environment)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


def object_keys(client: Any, bucket: str, prefix: str = "") -> list[str]:
    """Every key under ``prefix`` in ``bucket`` (all pages), sorted."""
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return sorted(keys)


def bucket_exists(client: Any, bucket: str) -> bool:
    """Whether ``bucket`` exists on the server."""
    return bucket in {b["Name"] for b in client.list_buckets().get("Buckets", [])}


@contextlib.contextmanager
def report_on_failure(server: MotoServer) -> Iterator[None]:
    """Prints the server log tail (shown by pytest with the failure) when the block raises."""
    try:
        yield
    except BaseException:
        print(f"moto_server log tail ({server.log_path}):\n{server.log_tail()}")
        raise
