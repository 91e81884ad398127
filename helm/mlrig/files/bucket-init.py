"""The bucket-init hook: create the DVC and MLflow buckets when missing, with the store's
administrator keys (AWS_* in the environment), waiting for the endpoint to answer."""

import os
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

WAIT_SECONDS = 600


def bucket_exists(client, bucket: str) -> bool:
    """Whether the bucket exists; waits while the endpoint does not answer."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            client.head_bucket(Bucket=bucket)
            return True
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in {"404", "NoSuchBucket"}:
                return False
            raise
        except (EndpointConnectionError, BotoCoreError):
            if time.monotonic() > deadline:
                raise
            time.sleep(3)


def main() -> int:
    region = os.environ["AWS_DEFAULT_REGION"]
    client = boto3.client(
        "s3",
        endpoint_url=os.environ["MLRIG_S3_ENDPOINT"],
        region_name=region,
        config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3}),
    )
    # AWS wants the region named for any bucket outside us-east-1
    placement = {}
    if region != "us-east-1":
        placement = {"CreateBucketConfiguration": {"LocationConstraint": region}}
    for bucket in os.environ["MLRIG_BUCKETS"].split(","):
        try:
            if bucket_exists(client, bucket):
                print(f"bucket {bucket}: exists")
                continue
            client.create_bucket(Bucket=bucket, **placement)
        except (ClientError, BotoCoreError) as error:
            print(f"mlrig: bucket {bucket}: {error}", file=sys.stderr)
            return 1
        print(f"bucket {bucket}: created")
    return 0


sys.exit(main())
