"""moto's server, as released, but for two replies that S3 gives otherwise.

- moto 5.2.5 names the root element of its S3 ListParts reply `ListPartsResponse`;
  S3 itself answers `ListPartsResult` (as the API reference shows), and aws-sdk-rust
  refuses any other root. This launcher renames that one element.
- moto answers an UploadPart to an upload that was aborted or completed with a
  500 (a KeyError inside); S3 answers 404 NoSuchUpload. This launcher raises S3's
  error there.
- moto reads ListParts' `part-number-marker` as an index into the upload's list of
  parts; S3 reads it as a part number and lists the parts numbered above it. This
  launcher lists as S3 does (an upload whose parts are not 1..N, such as one with
  the fleet's marker part 10000, is listed otherwise by moto).
- moto lists every multipart upload as initiated at one fixed time in 2010; S3
  lists the time each was created. This launcher lists that time (to the second).
- moto lists an upload's parts without their checksums; S3 lists each part's
  checksum where the upload was created with a checksum algorithm. This launcher
  lists the CRC32C of each part's bytes for uploads created with CRC32C.

It changes nothing else, so the tests see S3's wire format. Arguments are
moto_server's own.
"""

import re
import sys
from datetime import datetime, timezone

from moto.core.serialize import S3Serializer
from moto.s3.exceptions import NoSuchUpload
from moto.s3.models import FakeMultipart, S3Backend
from moto.s3.utils import compute_checksum
from moto.server import main

_serialize = S3Serializer._serialized_result_to_response

# When each upload was created, by upload id.
_initiated = {}
# The CRC32C of each part of uploads created with CRC32C, by (upload id, part number).
_part_checksums = {}
_PART = re.compile(r"<Part>.*?</Part>", re.S)
_UPLOAD = re.compile(r"<Upload>.*?</Upload>", re.S)


def _with_initiated(match):
    upload = match.group(0)
    upload_id = re.search(r"<UploadId>(.*?)</UploadId>", upload)
    when = upload_id and _initiated.get(upload_id.group(1))
    if not when:
        return upload
    return re.sub(r"<Initiated>.*?</Initiated>", f"<Initiated>{when}</Initiated>", upload)


def _serialize_as_s3_does(self, resp, result, shape, serialized_result):
    resp = _serialize(self, resp, result, shape, serialized_result)
    if self.operation_model.name == "ListMultipartUploads":
        body = resp["body"]
        if isinstance(body, bytes):
            body = body.decode("utf-8")
        resp["body"] = _UPLOAD.sub(_with_initiated, body)
    if self.operation_model.name == "ListParts":
        body = resp["body"]
        if isinstance(body, bytes):
            body = body.decode("utf-8")
        body = body.replace("<ListPartsResponse", "<ListPartsResult", 1).replace(
            "</ListPartsResponse>", "</ListPartsResult>", 1
        )
        upload_id = re.search(r"<UploadId>(.*?)</UploadId>", body)
        if upload_id:
            body = _PART.sub(lambda m: _with_checksum(upload_id.group(1), m), body)
        resp["body"] = body
    return resp


def _with_checksum(upload_id, match):
    part = match.group(0)
    number = re.search(r"<PartNumber>(\d+)</PartNumber>", part)
    checksum = number and _part_checksums.get((upload_id, int(number.group(1))))
    if not checksum:
        return part
    return part.replace("</Part>", f"<ChecksumCRC32C>{checksum}</ChecksumCRC32C></Part>")


S3Serializer._serialized_result_to_response = _serialize_as_s3_does

_upload_part = S3Backend.upload_part


def _upload_part_as_s3_does(self, bucket_name, multipart_id, part_id, value):
    if multipart_id not in self.get_bucket(bucket_name).multiparts:
        raise NoSuchUpload(upload_id=multipart_id)
    return _upload_part(self, bucket_name, multipart_id, part_id, value)


S3Backend.upload_part = _upload_part_as_s3_does


def _list_parts_as_s3_does(self, part_number_marker, max_parts):
    numbers = [n for n in self.partlist if n > part_number_marker][:max_parts]
    for number in numbers:
        yield self.parts[number]


def _is_truncated_as_s3_does(self, bucket_name, multipart_id, next_part_number_marker):
    parts = self.get_bucket(bucket_name).multiparts[multipart_id].partlist
    return any(n > int(next_part_number_marker) for n in parts)


_multipart_init = FakeMultipart.__init__


def _multipart_init_as_s3_does(self, *args, **kwargs):
    _multipart_init(self, *args, **kwargs)
    now = datetime.now(timezone.utc)
    _initiated[self.id] = now.strftime("%Y-%m-%dT%H:%M:%S.000Z")


FakeMultipart.__init__ = _multipart_init_as_s3_does

_set_part = FakeMultipart.set_part


def _set_part_as_s3_does(self, part_id, value):
    key = _set_part(self, part_id, value)
    if str(self.metadata.get("x-amz-checksum-algorithm", "")).upper() == "CRC32C":
        _part_checksums[(self.id, part_id)] = compute_checksum(key.value, "CRC32C").decode()
    return key


FakeMultipart.set_part = _set_part_as_s3_does
FakeMultipart.list_parts = _list_parts_as_s3_does
S3Backend.is_truncated = _is_truncated_as_s3_does

if __name__ == "__main__":
    sys.exit(main())
