"""The local S3 server's ListObjectsV2 answer, written without moto's serializer."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from streams.local_s3 import list_objects_v2_xml

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def test_a_listing_has_one_contents_element_per_key_and_escapes_text():
    xml = list_objects_v2_xml({
        "Name": "tansu", "Prefix": "a/<b>&", "MaxKeys": 1000, "KeyCount": 2,
        "IsTruncated": True, "NextContinuationToken": "t&1",
        "Contents": [
            {"Key": "a/1.batch", "LastModified": "2026-12-02T06:26:35.000Z",
             "ETag": '"8a48"', "Size": 300, "StorageClass": "STANDARD"},
            {"Key": "a/2.batch", "LastModified": "2026-12-02T06:26:36.000Z",
             "ETag": '"9b59"', "Size": 12, "StorageClass": "STANDARD",
             "ChecksumAlgorithm": ["CRC32"]},
        ],
        "StartAfter": None,
    })
    root = ET.fromstring(xml)
    assert root.tag == f"{NS}ListBucketResult"
    assert root.findtext(f"{NS}Prefix") == "a/<b>&"
    assert root.findtext(f"{NS}IsTruncated") == "true"
    assert root.findtext(f"{NS}NextContinuationToken") == "t&1"
    assert root.find(f"{NS}StartAfter") is None
    contents = root.findall(f"{NS}Contents")
    assert [c.findtext(f"{NS}Key") for c in contents] == ["a/1.batch", "a/2.batch"]
    assert [c.findtext(f"{NS}ETag") for c in contents] == ['"8a48"', '"9b59"']
    assert contents[1].findtext(f"{NS}ChecksumAlgorithm") == "CRC32"
    assert contents[0].findtext(f"{NS}Size") == "300"


def paged(backend, bucket, prefix, max_keys, start_after=None):
    """Every page of a listing, as (names, truncated) per page, following its tokens."""
    pages, token = [], None
    while True:
        keys, truncated, token = backend.list_objects_v2(
            bucket, prefix, None, token, start_after if token is None else None, max_keys)
        pages.append(([k.name for k in keys], truncated))
        if not truncated:
            return pages


def test_the_indexed_listing_answers_as_moto_does(monkeypatch):
    import random

    from moto.s3.models import S3Backend
    from moto.s3.utils import _VersionedKeyStore

    from streams import local_s3

    for cls, name in [(S3Backend, "list_objects_v2"), (_VersionedKeyStore, "__setitem__"),
                      (_VersionedKeyStore, "setlist"), (_VersionedKeyStore, "pop")]:
        monkeypatch.setattr(cls, name, getattr(cls, name))  # put back after the test
    original = S3Backend.list_objects_v2
    backend = S3Backend("us-east-1", "123456789012")
    bucket = backend.create_bucket("sms-cooldown-listing", "us-east-1")
    rng = random.Random(5)

    def write_some(count: int) -> None:
        for _ in range(count):
            name = f"p/{rng.randrange(3)}/records/{rng.randrange(400):020}.batch"
            backend.put_object(bucket.name, name, b"x")
        for _ in range(count // 5):
            name = rng.choice(sorted(bucket.keys.keys()) or ["none"])
            backend.delete_object(bucket.name, name)

    write_some(300)  # before the index exists
    local_s3.install_indexed_listing()
    backend.list_objects_v2(bucket, "p/", None, None, None, 1)  # builds the index
    write_some(300)  # kept in step by the writes and deletes
    for prefix in ["p/0/records/", "p/1/", "p/", "", "q/", "p/2/records/0000"]:
        for max_keys in [1, 7, 1000]:
            for start_after in [None, "p/1/records/00000000000000000200.batch"]:
                args = (bucket, prefix, None, None, start_after, max_keys)
                keys, truncated, token = original(backend, *args)
                first = backend.list_objects_v2(*args)
                assert ([k.name for k in first[0]], *first[1:]) == \
                    ([k.name for k in keys], truncated, token), args
                indexed = paged(backend, bucket, prefix, max_keys, start_after)
                listed = [name for names, _ in indexed for name in names]
                assert listed == sorted(n for n in bucket.keys.keys() if n.startswith(prefix)
                                        and (start_after is None or n > start_after))


PARTITION = "clusters/c/topics/sms.t/partitions/0000000001/"


def batch(offset):
    return f"{PARTITION}records/{offset:020}.batch"


def test_a_listing_stops_before_the_first_batch_whose_offsets_are_taken_until_it_is_written():
    from streams.local_s3 import BatchesAwaited

    now = [0.0]
    awaited = BatchesAwaited(clock=lambda: now[0])
    records = f"{PARTITION}records/"
    watermark = f"{PARTITION}watermark.json"
    assert awaited.listing_stop(records) is None
    awaited.written(watermark, None, b'{"low":null,"high":null,"timestamps":null}')
    assert awaited.listing_stop(records) is None  # a topic made: no offsets taken
    # Two produces take offsets 0-9 and 10-24; the second batch is written first.
    awaited.written(watermark, b'{"low":null,"high":null,"timestamps":null}',
                    b'{"low":null,"high":10,"timestamps":null}')
    awaited.written(watermark, b'{"low":null,"high":10,"timestamps":null}',
                    b'{"low":null,"high":25,"timestamps":null}')
    awaited.written(batch(10), None, b"...")
    assert awaited.listing_stop(records) == batch(0)
    assert awaited.listing_stop("clusters/c/topics/sms.t/partitions/0000000002/records/") \
        is None
    awaited.written(batch(0), None, b"...")
    assert awaited.listing_stop(records) is None
    # A batch never written (its broker killed in between) holds the listing no longer
    # than the wait.
    awaited.written(watermark, b'{"high":25}', b'{"high":30}')
    assert awaited.listing_stop(records) == batch(25)
    now[0] += BatchesAwaited.WAIT_S + 1
    assert awaited.listing_stop(records) is None
    # And not at all once the broker that took the offsets starts again.
    awaited.written(watermark, b'{"high":30}', b'{"high":31}')
    assert awaited.listing_stop(records) == batch(30)
    awaited.broker_starting()
    assert awaited.listing_stop(records) is None
