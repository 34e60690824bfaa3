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
