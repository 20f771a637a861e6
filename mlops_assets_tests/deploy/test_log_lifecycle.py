"""The object-store lifecycle rule of the logs: valid for S3, and accepted by an S3 API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlops_assets import settings

RULES = settings.project_root() / "deploy" / "storage" / "log-lifecycle.json"


@pytest.fixture(scope="module")
def lifecycle() -> dict[str, Any]:
    return dict(json.loads(Path(RULES).read_text()))


def test_the_rules_match_the_s3_api_schema(lifecycle: dict[str, Any]) -> None:
    import botocore.session
    from botocore.validate import ParamValidator

    operation = (
        botocore.session.get_session()
        .get_service_model("s3")
        .operation_model("PutBucketLifecycleConfiguration")
    )
    params = {"Bucket": "mlops", "LifecycleConfiguration": lifecycle}
    report = ParamValidator().validate(params, operation.input_shape)
    assert not report.has_errors(), report.generate_report()
    broken = {"Bucket": "mlops", "LifecycleConfiguration": {"Rules": [{"Expiration": "30"}]}}
    assert ParamValidator().validate(broken, operation.input_shape).has_errors()


def test_compute_logs_expire_after_30_days(lifecycle: dict[str, Any]) -> None:
    [rule] = lifecycle["Rules"]
    assert rule["Filter"] == {"Prefix": "dagster/compute-logs/"} and rule["Status"] == "Enabled"
    assert rule["Expiration"] == {"Days": 30}


def test_an_s3_api_stores_the_rules(lifecycle: dict[str, Any]) -> None:
    import boto3
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client(
            "s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
        s3.create_bucket(Bucket="mlops")
        s3.put_bucket_lifecycle_configuration(Bucket="mlops", LifecycleConfiguration=lifecycle)
        stored = s3.get_bucket_lifecycle_configuration(Bucket="mlops")["Rules"]
    assert [r["ID"] for r in stored] == [r["ID"] for r in lifecycle["Rules"]]
    assert [r["Expiration"] for r in stored] == [r["Expiration"] for r in lifecycle["Rules"]]
