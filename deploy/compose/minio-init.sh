#!/bin/sh
# One-shot setup of MinIO for deploy/compose.yaml: the project's bucket, private, and an access
# key for the applications that can use this bucket only (the root account stays with the
# operator). Safe to run again.
set -eu
mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "local/$MLOPS_BUCKET"
mc anonymous set none "local/$MLOPS_BUCKET"

policy=/tmp/mlops-bucket.json
cat >"$policy" <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": ["s3:*"],
      "Resource": ["arn:aws:s3:::$MLOPS_BUCKET", "arn:aws:s3:::$MLOPS_BUCKET/*"]
    }
  ]
}
JSON
mc admin policy create local mlops-bucket "$policy"
mc admin user add local "$MLOPS_S3_ACCESS_KEY_ID" "$MLOPS_S3_SECRET_ACCESS_KEY"
if ! mc admin user info local "$MLOPS_S3_ACCESS_KEY_ID" | grep -q mlops-bucket; then
  mc admin policy attach local mlops-bucket --user "$MLOPS_S3_ACCESS_KEY_ID"
fi
echo "bucket $MLOPS_BUCKET ready for $MLOPS_S3_ACCESS_KEY_ID"
