"""The local S3 server honours conditional writes made concurrently, as the broker
makes them: of writers that may only create a key, or only replace the version they
read, exactly one succeeds."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from streams.local_s3 import LocalS3

pytestmark = pytest.mark.integration
WRITERS = 8


def all_at_once(write: Callable[[int], None]) -> list[int]:
    """Each writer's HTTP status, the writes started together."""
    from botocore.exceptions import ClientError

    answers: list[int] = []
    start = threading.Barrier(WRITERS)

    def one(writer: int) -> None:
        start.wait()
        try:
            write(writer)
            answers.append(200)
        except ClientError as refused:
            answers.append(refused.response["ResponseMetadata"]["HTTPStatusCode"])

    threads = [threading.Thread(target=one, args=(w,)) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(answers)


def test_of_concurrent_conditional_writes_exactly_one_succeeds():
    import boto3

    s3 = LocalS3().start()
    try:
        # boto3's clients are not to be shared between threads.
        clients: list[Any] = [
            boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1",
                         aws_access_key_id="test", aws_secret_access_key="test")
            for _ in range(WRITERS)]
        one_success = [200] + [412] * (WRITERS - 1)
        for n in range(20):
            batch = f"records/{n:020}.batch"
            assert all_at_once(lambda w, key=batch: clients[w].put_object(
                Bucket=LocalS3.BUCKET, Key=key, Body=b"batch %d" % w,
                IfNoneMatch="*")) == one_success, batch
            watermark = f"watermark-{n}.json"
            etag = clients[0].put_object(Bucket=LocalS3.BUCKET, Key=watermark,
                                         Body=b"{}")["ETag"]
            assert all_at_once(lambda w, key=watermark, etag=etag: clients[w].put_object(
                Bucket=LocalS3.BUCKET, Key=key, Body=b'{"writer": %d}' % w,
                IfMatch=etag)) == one_success, watermark
    finally:
        s3.stop()


def test_a_partition_is_listed_only_up_to_a_batch_not_yet_written():
    """The broker's two writes of a produce (the watermark, then the batch), for two
    produces to one partition whose batches are written in the other order."""
    import boto3

    s3 = LocalS3().start()
    try:
        client = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1",
                              aws_access_key_id="test", aws_secret_access_key="test")
        partition = "clusters/c/topics/sms-cooldown-by-number/partitions/0000000003/"

        def put(key: str, body: bytes) -> None:
            client.put_object(Bucket=LocalS3.BUCKET, Key=partition + key, Body=body)

        def listed() -> list[str]:
            return [o["Key"].removeprefix(partition + "records/") for o in
                    client.list_objects_v2(Bucket=LocalS3.BUCKET,
                                           Prefix=partition + "records/").get("Contents", [])]

        put("watermark.json", b'{"low":null,"high":5,"timestamps":null}')
        put(f"records/{0:020}.batch", b"first")
        put("watermark.json", b'{"low":null,"high":15,"timestamps":null}')
        put("watermark.json", b'{"low":null,"high":20,"timestamps":null}')
        put(f"records/{15:020}.batch", b"third")
        assert listed() == [f"{0:020}.batch"]
        put(f"records/{5:020}.batch", b"second")
        assert listed() == [f"{o:020}.batch" for o in (0, 5, 15)]
        # A broker killed between its two writes: the next one's start makes a hole.
        put("watermark.json", b'{"low":null,"high":25,"timestamps":null}')
        put("watermark.json", b'{"low":null,"high":30,"timestamps":null}')
        put(f"records/{25:020}.batch", b"after the hole")
        assert listed() == [f"{o:020}.batch" for o in (0, 5, 15)]
        s3.broker_starting()
        assert listed() == [f"{o:020}.batch" for o in (0, 5, 15, 25)]
    finally:
        s3.stop()
