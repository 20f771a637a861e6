"""S3 for end-to-end tests: the environment every client needs to reach ``moto_server``.

The server itself is ``servers.MotoServer`` (the ``moto_server`` fixture). ``aws_environment``
gives the variables every S3 client of the stack (s3fs/aiobotocore for the
lake and the landing zone, dvc-s3 for the DVC remote, boto3 for MLflow's artifact store)
needs to talk to that server and to nothing else: the endpoint, fake credentials, no instance
metadata service and no ``~/.aws`` configuration.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

REGION = "us-east-1"


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


def object_keys(client: Any, bucket: str, prefix: str = "") -> list[str]:
    """Every key under ``prefix`` in ``bucket`` (all pages), sorted."""
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return sorted(keys)


def bucket_exists(client: Any, bucket: str) -> bool:
    """Whether ``bucket`` exists on the server."""
    return bucket in {b["Name"] for b in client.list_buckets().get("Buckets", [])}
