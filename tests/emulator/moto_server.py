"""moto's server, as released, but for the replies that S3 gives otherwise.

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
  lists the time each was created. This launcher lists that time, to the millisecond as S3 does.
- moto lists an upload's parts without their checksums, and ListParts without the
  upload's algorithm; S3 lists each part's checksum where the upload was created
  with a checksum algorithm, and the upload's `ChecksumAlgorithm` and
  `ChecksumType`. This launcher lists the checksum of each part's bytes in the
  upload's algorithm (`ChecksumCRC32C`, `ChecksumSHA256`, ...), and both.
- moto stores the checksum a PutObject carries without checking it against the
  body, and reads one only beside `x-amz-sdk-checksum-algorithm`; S3 checks the
  value, sent as a header or as the trailer of an aws-chunked body, and refuses a
  mismatch with 400 BadDigest ("The CRC32C you specified did not match the
  calculated checksum."), and computes the checksum when the request names only the
  algorithm. This launcher does as S3, and answers `x-amz-checksum-type:
  FULL_OBJECT` beside the value as S3 does.
- moto answers a HEAD or GET with `x-amz-sdk-checksum-algorithm` (a request header)
  and, for an object of a multipart upload, `x-amz-checksum-algorithm` and
  `x-amz-checksum-type` even without checksum mode; with `x-amz-checksum-mode:
  ENABLED` its HEAD gives a composite checksum without its `-<parts>` and no
  `x-amz-checksum-type`, and neither gives a part's checksum for `?partNumber=N`.
  S3 answers checksum headers only in checksum mode and not for a ranged GET:
  `x-amz-checksum-<alg>` (a composite value ends in `-<parts>`) and
  `x-amz-checksum-type`, and for `?partNumber=N` of a COMPOSITE object that part's
  own checksum. This launcher answers as S3.
- moto answers GET `?partNumber=N` of a multipart object with the whole object
  (200); S3 answers that part's bytes (206, `Content-Range`, `x-amz-mp-parts-count`).
  This launcher answers the part.
- moto's CreateMultipartUpload accepts any checksum algorithm and type together,
  and names no `x-amz-checksum-type` when none was asked; S3 defaults the type
  (COMPOSITE, FULL_OBJECT for CRC64NVME), refuses FULL_OBJECT but for CRC32,
  CRC32C and CRC64NVME and COMPOSITE for CRC64NVME (400 InvalidRequest), and answers
  both (a type without an algorithm is refused too). This launcher does as S3.
- moto's UploadPart neither checks a part's checksum nor requires one; S3 refuses a
  checksum in another algorithm than the upload's, or none for a COMPOSITE upload
  (400 InvalidRequest "Checksum Type mismatch occurred, ..."), and a value that
  does not match (400 BadDigest), and answers the part's checksum. This launcher
  does as S3 (a part of an upload created without an algorithm is checked against
  any checksum it carries, and its checksum is not recorded, as before). Its
  UploadPartCopy reply also gives the copied part's checksum, as S3's does.
- moto's CompleteMultipartUpload ignores the checksums it is sent, stores a
  composite checksum it computes without the upload's type, and gives none in its
  reply; S3 requires each part's checksum for a COMPOSITE upload (400
  InvalidRequest), refuses a part checksum that differs (400 InvalidPart) and an
  object checksum or type that differs (400 BadDigest), and answers
  `<ChecksumCRC32C>` (the algorithm's element: the CRC of the whole object for
  FULL_OBJECT, the checksum of the parts' checksums and `-<parts>` for COMPOSITE)
  and `<ChecksumType>`. This launcher does as S3. A CopyObject keeps the source's
  checksum type with its value, as the copy keeps its value in moto.
- moto ignores SSE-C (customer-provided keys): it stores nothing, echoes nothing,
  and serves the object to anyone. S3 refuses a key whose MD5 is not the one given
  (400 InvalidArgument), echoes `x-amz-server-side-encryption-customer-algorithm`
  and `-customer-key-MD5`, and refuses a GET or HEAD (also of `?partNumber`)
  without the key (400 InvalidRequest "The object was stored using a form of
  Server Side Encryption. ..."), with another key (403 AccessDenied), or with a key
  for an object stored without one (400 InvalidRequest); each part of an SSE-C
  upload needs the upload's key (400 InvalidRequest), and a copy needs the
  source's in `x-amz-copy-source-server-side-encryption-customer-*`. This launcher
  does as S3 (a HEAD refused has no body, as S3's; an SSE-C object is under no
  other server-side encryption). GetObjectTagging needs no key, in moto as in S3.

And one change of speed, not of behaviour: moto decodes an aws-chunked body (a
streamed part with its checksum in a trailer, as aws-sdk-rust sends one) by
appending each chunk to a `bytes`, which copies the whole body so far each time:
a 16 MiB part in 8 KiB chunks cost it 1.4 s of CPU, so a part's decoding, not the
copy, bounded every benchmark through this server. This launcher decodes the same
chunks into the same bytes in one pass.

It changes nothing else, so the tests see S3's wire format. Arguments are
moto_server's own.
"""

import base64
import binascii
import hashlib
import io
import re
import sys
import threading
import zlib
from datetime import datetime, timezone
from urllib.parse import parse_qs, unquote, urlparse
from xml.dom import minidom

import crc32c
from moto.core.responses import ActionResult
from moto.core.serialize import S3Serializer
from moto.s3.exceptions import InvalidPart, NoSuchUpload, S3ClientError
from moto.s3.models import FakeMultipart, S3Backend
from moto.s3.responses import S3Response
from moto.server import main

try:
    from awscrt.checksums import crc64nvme as _crc64nvme
except ImportError:
    # scripts/setup-emulators installs awscrt; without it, this slower table-driven
    # CRC-64/NVME (reflected polynomial 0x9A6C9329AC4BC9B5).
    _CRC64NVME_TABLE = []
    for _byte in range(256):
        _crc = _byte
        for _ in range(8):
            _crc = (_crc >> 1) ^ 0x9A6C9329AC4BC9B5 if _crc & 1 else _crc >> 1
        _CRC64NVME_TABLE.append(_crc)

    def _crc64nvme(data, crc=0):
        crc ^= 0xFFFFFFFFFFFFFFFF
        table = _CRC64NVME_TABLE
        for byte in data:
            crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
        return crc ^ 0xFFFFFFFFFFFFFFFF


_serialize = S3Serializer._serialized_result_to_response

# The additional checksums S3 computes, and those that may be FULL_OBJECT in an upload.
ALGORITHMS = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")
FULL_OBJECT_ALGORITHMS = ("CRC32", "CRC32C", "CRC64NVME")
_SSE_C = "x-amz-server-side-encryption-customer-"
_COPY_SOURCE_SSE_C = "x-amz-copy-source-server-side-encryption-customer-"

# When each upload was created, by upload id.
_initiated = {}
# The (algorithm, type) of uploads created with a checksum algorithm, by upload id.
_upload_checksums = {}
# The (algorithm, base64 checksum) of each part of such uploads, by (upload id, part number).
_part_checksums = {}
# The part numbers each upload was completed with, in order, by upload id.
_completed_parts = {}
# What the request being served created: the object (`key`) and the upload (`multipart`).
_created = threading.local()
_PART = re.compile(r"<Part>.*?</Part>", re.S)
_UPLOAD = re.compile(r"<Upload>.*?</Upload>", re.S)


class _Refusal(S3ClientError):
    """An S3 error answered with `http_status` (moto answers 400 for codes it does
    not model, such as AccessDenied)."""

    def __init__(self, code, message, http_status=400):
        super().__init__(code, message)
        self.http_status = http_status


def _digest(data, algorithm):
    """The raw (big-endian) checksum of `data`."""
    if algorithm == "CRC32":
        return zlib.crc32(data).to_bytes(4, "big")
    if algorithm == "CRC32C":
        return crc32c.crc32c(data).to_bytes(4, "big")
    if algorithm == "CRC64NVME":
        return _crc64nvme(data).to_bytes(8, "big")
    if algorithm == "SHA1":
        return hashlib.sha1(data).digest()
    return hashlib.sha256(data).digest()


def _checksum(data, algorithm):
    """The checksum of `data` as S3 gives it: base64 of the raw digest."""
    return base64.b64encode(_digest(data, algorithm)).decode()


def _bad_digest(algorithm):
    return _Refusal(
        "BadDigest", f"The {algorithm} you specified did not match the calculated checksum."
    )


def _sent_checksum(response):
    """The (algorithm, value) of the checksum a write carries: a header
    `x-amz-checksum-<alg>`, or the trailer of its aws-chunked body named by
    `x-amz-trailer`; the value is None where the request only names the algorithm
    (`x-amz-sdk-checksum-algorithm`), both are None where it names none of ALGORITHMS."""
    headers = response.headers
    for algorithm in ALGORITHMS:
        value = headers.get(f"x-amz-checksum-{algorithm.lower()}")
        if value:
            return algorithm, value
    trailer = headers.get("x-amz-trailer", "").strip().lower()
    algorithm = trailer.removeprefix("x-amz-checksum-").upper()
    if trailer.startswith("x-amz-checksum-") and algorithm in ALGORITHMS:
        # The trailer ends the body: `0\r\nx-amz-checksum-crc32c:<value>\r\n\r\n`
        # (a signed one adds x-amz-trailer-signature). moto has decoded the chunks of
        # `body`; `raw_body` still holds the trailer.
        raw = response.raw_body or b""
        if isinstance(raw, str):
            raw = raw.encode()
        pattern = re.escape(trailer.encode()) + rb"\s*:\s*([A-Za-z0-9+/=]+)"
        found = re.findall(pattern, raw[-1024:], re.I)
        return algorithm, (found[-1].decode() if found else None)
    named = (
        headers.get("x-amz-sdk-checksum-algorithm") or headers.get("x-amz-checksum-algorithm") or ""
    ).upper()
    if named in ALGORITHMS:
        return named, None
    return None, None


def _without_checksums(headers):
    """Drops moto's checksum headers from a reply, so that only S3's are added."""
    for name in list(headers):
        lower = name.lower()
        if lower.startswith("x-amz-checksum-") or lower == "x-amz-sdk-checksum-algorithm":
            del headers[name]


def _object_checksum(key):
    """The object's checksum headers, as S3 answers them in checksum mode."""
    if not key.checksum_algorithm or not key.checksum_value:
        return {}
    value = key.checksum_value
    if key.checksum_type == "COMPOSITE":
        value = f"{value}-{key.checksum_parts}"
    headers = {f"x-amz-checksum-{key.checksum_algorithm.lower()}": value}
    if key.checksum_type:
        headers["x-amz-checksum-type"] = key.checksum_type
    return headers


def _read_checksum(response, key, part_number):
    """The checksum headers of a HEAD or GET of `key` (the whole object; `part_number`
    0 or the part read): none unless the request asks with checksum mode; the part's
    own checksum for a part of a COMPOSITE object (and none for another part)."""
    if response.headers.get("x-amz-checksum-mode", "").upper() != "ENABLED":
        return {}
    if part_number and key.multipart:
        if key.checksum_type != "COMPOSITE":
            return {}
        algorithm, value = _part_checksums.get((key.multipart.id, part_number), (None, None))
        if algorithm != key.checksum_algorithm or not value:
            return {}
        return {f"x-amz-checksum-{algorithm.lower()}": value, "x-amz-checksum-type": "COMPOSITE"}
    return _object_checksum(key)


def _customer_key(headers, prefix=_SSE_C):
    """The key MD5 (base64) of the SSE-C headers with `prefix`, None without them;
    refuses, as S3 does, headers that name no AES256, no 256-bit key, or another MD5."""
    algorithm = headers.get(prefix + "algorithm")
    key = headers.get(prefix + "key")
    given_md5 = headers.get(prefix + "key-MD5")
    if not (algorithm or key or given_md5):
        return None
    if algorithm != "AES256":
        raise _Refusal(
            "InvalidArgument",
            "Requests specifying Server Side Encryption with Customer provided keys "
            "must provide a valid encryption algorithm.",
        )
    if not key:
        raise _Refusal(
            "InvalidArgument",
            "Requests specifying Server Side Encryption with Customer provided keys "
            "must provide an appropriate secret key.",
        )
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise _Refusal("InvalidArgument", "The secret key was invalid for the specified algorithm.")
    md5 = base64.b64encode(hashlib.md5(raw).digest()).decode()
    if given_md5 and given_md5 != md5:
        raise _Refusal(
            "InvalidArgument",
            "The calculated MD5 hash of the key did not match the hash that was provided.",
        )
    return md5


def _customer_key_headers(md5):
    """The SSE-C headers S3 echoes for an object or upload stored with key MD5 `md5`."""
    if not md5:
        return {}
    return {_SSE_C + "algorithm": "AES256", _SSE_C + "key-MD5": md5}


def _store_customer_key(key, md5, headers, echo=True):
    """Records that `key` is stored under the SSE-C key of MD5 `md5` (none if None),
    and echoes it in the reply's `headers` (CompleteMultipartUpload's names no key).
    An SSE-C object is under no other server-side encryption, such as the bucket's
    default."""
    if md5 is None:
        return
    key.sse_customer_key_md5 = md5
    key.encryption = key.kms_key_id = key.bucket_key_enabled = None
    for name in list(headers):
        if name.lower().startswith("x-amz-server-side-encryption"):
            del headers[name]
    if echo:
        headers.update(_customer_key_headers(md5))


def _check_read(headers, key, prefix=_SSE_C):
    """Refuses, as S3 does, to read `key` (the whole object) without the SSE-C key it
    was stored with, with another, or with one where it was stored without."""
    stored = getattr(key, "sse_customer_key_md5", None)
    given = _customer_key(headers, prefix)
    if stored is None and given is not None:
        raise _Refusal(
            "InvalidRequest", "The encryption parameters are not applicable to this object."
        )
    if stored is not None and given is None:
        raise _Refusal(
            "InvalidRequest",
            "The object was stored using a form of Server Side Encryption. The correct "
            "parameters must be provided to retrieve the object.",
        )
    if stored != given:
        raise _Refusal(
            "AccessDenied",
            "The calculated MD5 hash of the key did not match the hash that was provided.",
            403,
        )


def _check_part_customer_key(headers, multipart):
    """Refuses, as S3 does, a part without the SSE-C key its upload was created with,
    or with another."""
    stored = getattr(multipart, "sse_customer_key_md5", None)
    given = _customer_key(headers)
    if stored is not None and given is None:
        raise _Refusal(
            "InvalidRequest",
            "The multipart upload initiate requested encryption. Subsequent part "
            "requests must include the appropriate encryption parameters.",
        )
    if stored != given:
        raise _Refusal(
            "InvalidRequest",
            "The provided encryption parameters did not match the ones used originally.",
        )


def _copy_source(response):
    """The object `x-amz-copy-source` names, None where there is none (moto then
    answers its own error)."""
    parsed = urlparse(response.headers.get("x-amz-copy-source", ""))
    bucket, _, key = unquote(parsed.path).lstrip("/").partition("/")
    version_id = parse_qs(parsed.query).get("versionId", [None])[0]
    try:
        return response.backend.get_object(bucket, key, version_id=version_id)
    except S3ClientError:
        return None


def _to_text(body):
    return body.decode("utf-8") if isinstance(body, bytes) else body


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
        resp["body"] = _UPLOAD.sub(_with_initiated, _to_text(resp["body"]))
    if self.operation_model.name == "ListParts":
        body = _to_text(resp["body"])
        body = body.replace("<ListPartsResponse", "<ListPartsResult", 1).replace(
            "</ListPartsResponse>", "</ListPartsResult>", 1
        )
        upload_id = re.search(r"<UploadId>(.*?)</UploadId>", body)
        if upload_id:
            upload_id = upload_id.group(1)
            body = _PART.sub(lambda m: _with_checksum(upload_id, m), body)
            if upload_id in _upload_checksums:
                algorithm, checksum_type = _upload_checksums[upload_id]
                body = body.replace(
                    "</ListPartsResult>",
                    f"<ChecksumAlgorithm>{algorithm}</ChecksumAlgorithm>"
                    f"<ChecksumType>{checksum_type}</ChecksumType></ListPartsResult>",
                    1,
                )
        resp["body"] = body
    return resp


def _with_checksum(upload_id, match):
    part = match.group(0)
    number = re.search(r"<PartNumber>(\d+)</PartNumber>", part)
    checksum = number and _part_checksums.get((upload_id, int(number.group(1))))
    if not checksum:
        return part
    algorithm, value = checksum
    return part.replace("</Part>", f"<Checksum{algorithm}>{value}</Checksum{algorithm}></Part>")


S3Serializer._serialized_result_to_response = _serialize_as_s3_does


def _decode_chunked_in_one_pass(self, body):
    """moto's `_handle_encoded_body`, with the chunks joined once: the same bytes."""
    if not body:
        return b""
    if isinstance(body, bytes):
        body = io.BytesIO(body)
    chunks = []
    size = int(body.readline().strip(), 16)
    while size > 0:
        chunks.append(body.read(size))
        body.readline()
        size = int(body.readline().strip(), 16)
    return b"".join(chunks)


S3Response._handle_encoded_body = _decode_chunked_in_one_pass

_key_response = S3Response._key_response


def _key_response_as_s3_does(self, request, full_url):
    # The launcher's refusals, with S3's status; a HEAD's without a body, as S3's.
    try:
        return _key_response(self, request, full_url)
    except _Refusal as refusal:
        if request.method == "HEAD":
            return refusal.http_status, {}, ""
        _, headers, body = self.serialized(ActionResult(refusal))
        return refusal.http_status, headers, body


S3Response._key_response = _key_response_as_s3_does

_backend_put_object = S3Backend.put_object


def _put_object_recorded(self, *args, **kwargs):
    # Every object written (PutObject, CopyObject, CompleteMultipartUpload), for the
    # request's reply to describe.
    key = _backend_put_object(self, *args, **kwargs)
    _created.key = key
    return key


S3Backend.put_object = _put_object_recorded

_put_object = S3Response.put_object


def _put_object_as_s3_does(self):
    customer_key = _customer_key(self.headers)
    algorithm, sent = _sent_checksum(self)
    value = algorithm and _checksum(self.body or b"", algorithm)
    if sent is not None and sent != value:
        raise _bad_digest(algorithm)
    _created.key = None
    status, headers, body = _put_object(self)
    key = _created.key
    if key is None:
        return status, headers, body
    if algorithm:
        _without_checksums(headers)
        key.checksum_algorithm, key.checksum_value = algorithm, value
        key.checksum_type, key.checksum_parts = "FULL_OBJECT", None
        headers.update(_object_checksum(key))
    headers.pop("x-amz-sdk-checksum-algorithm", None)
    _store_customer_key(key, customer_key, headers)
    return status, headers, body


S3Response.put_object = _put_object_as_s3_does

_get_object = S3Response.get_object


def _get_object_as_s3_does(self):
    version_id = self.querystring.get("versionId", [None])[0]
    try:
        key = self.backend.get_object(
            self.bucket_name, self.parse_key_name(), version_id=version_id
        )
    except S3ClientError:
        key = None
    if key is not None:
        _check_read(self.headers, key)
    status, headers, body = _get_object(self)
    if key is None or status not in (200, 206):
        return status, headers, body
    _without_checksums(headers)
    part_number = self._get_int_param("partNumber") or 0
    multipart = key.multipart
    served = 0  # the part answered, 0 for the whole object
    if part_number and multipart and part_number in multipart.parts:
        # The part's bytes, where the object was completed from them.
        numbers = _completed_parts.get(multipart.id, multipart.partlist)
        if part_number in numbers:
            start = sum(multipart.parts[n].size for n in numbers[: numbers.index(part_number)])
            body = key.value[start : start + multipart.parts[part_number].size]
            status, served = 206, part_number
            headers["content-range"] = f"bytes {start}-{start + len(body) - 1}/{key.size}"
            headers["content-length"] = str(len(body))
            headers["x-amz-mp-parts-count"] = str(len(multipart.partlist))
    if not self.headers.get("range"):
        headers.update(_read_checksum(self, key, served))
    headers.update(_customer_key_headers(getattr(key, "sse_customer_key_md5", None)))
    return status, headers, body


S3Response.get_object = _get_object_as_s3_does

_head_object = S3Response.head_object


def _head_object_as_s3_does(self, bucket_name, query, key_name, headers):
    version_id = query.get("versionId", [None])[0]
    try:
        key = self.backend.get_object(bucket_name, key_name, version_id=version_id)
    except S3ClientError:
        key = None
    if key is not None:
        _check_read(self.headers, key)
    status, response_headers, body = _head_object(self, bucket_name, query, key_name, headers)
    if key is None or status not in (200, 206):
        return status, response_headers, body
    part_number = int(query.get("partNumber", ["0"])[0] or 0)
    _without_checksums(response_headers)
    response_headers.update(_read_checksum(self, key, part_number))
    response_headers.update(_customer_key_headers(getattr(key, "sse_customer_key_md5", None)))
    return status, response_headers, body


S3Response.head_object = _head_object_as_s3_does

_copy_object = S3Response.copy_object


def _copy_object_as_s3_does(self):
    source = _copy_source(self)
    if source is not None:
        _check_read(self.headers, source, _COPY_SOURCE_SSE_C)
    customer_key = _customer_key(self.headers)
    _created.key = None
    status, headers, body = _copy_object(self)
    key = _created.key
    if key is None:
        return status, headers, body
    if self.headers.get("x-amz-checksum-algorithm") and key.checksum_value:
        # moto computed it over the copy's bytes.
        key.checksum_type, key.checksum_parts = "FULL_OBJECT", None
    _store_customer_key(key, customer_key, headers)
    return status, headers, body


S3Response.copy_object = _copy_object_as_s3_does

_backend_copy_object = S3Backend.copy_object


def _backend_copy_object_as_s3_does(self, src_key, *args, **kwargs):
    # The copy keeps the source's checksum (moto copies its algorithm and value): its
    # type and part count too.
    _created.key = None
    result = _backend_copy_object(self, src_key, *args, **kwargs)
    key = _created.key
    if key is not None and key.checksum_value and key.checksum_value == src_key.checksum_value:
        key.checksum_type, key.checksum_parts = src_key.checksum_type, src_key.checksum_parts
    return result


S3Backend.copy_object = _backend_copy_object_as_s3_does

_upload_part_response = S3Response.upload_part


def _upload_part_response_as_s3_does(self):
    upload_id = self._get_param("uploadId")
    part_number = self._get_int_param("partNumber")
    try:
        multipart = self.backend.get_bucket(self.bucket_name).multiparts.get(upload_id)
    except S3ClientError:
        multipart = None
    if multipart is None:
        return _upload_part_response(self)  # NoSuchUpload, as below
    _check_part_customer_key(self.headers, multipart)
    expected, checksum_type = _upload_checksums.get(upload_id, (None, None))
    algorithm, sent = _sent_checksum(self)
    if expected and algorithm != expected and (algorithm or checksum_type == "COMPOSITE"):
        actual = algorithm.lower() if algorithm else "null"
        raise _Refusal(
            "InvalidRequest",
            f"Checksum Type mismatch occurred, expected checksum Type: {expected.lower()}, "
            f"actual checksum Type: {actual}",
        )
    value = algorithm and _checksum(self.body or b"", algorithm)
    if sent is not None and sent != value:
        raise _bad_digest(algorithm)
    status, headers, body = _upload_part_response(self)
    _without_checksums(headers)
    if expected:
        algorithm, value = _part_checksums[(upload_id, part_number)]
    if algorithm:
        headers[f"x-amz-checksum-{algorithm.lower()}"] = value
    headers.update(_customer_key_headers(getattr(multipart, "sse_customer_key_md5", None)))
    return status, headers, body


S3Response.upload_part = _upload_part_response_as_s3_does

_upload_part_copy = S3Response.upload_part_copy


def _upload_part_copy_as_s3_does(self):
    upload_id = self._get_param("uploadId")
    part_number = self._get_int_param("partNumber")
    source = _copy_source(self)
    if source is not None:
        _check_read(self.headers, source, _COPY_SOURCE_SSE_C)
    try:
        multipart = self.backend.get_bucket(self.bucket_name).multiparts.get(upload_id)
    except S3ClientError:
        multipart = None
    if multipart is not None:
        _check_part_customer_key(self.headers, multipart)
    status, headers, body = _upload_part_copy(self)
    checksum = _part_checksums.get((upload_id, part_number))
    if status == 200 and checksum:
        algorithm, value = checksum
        body = _to_text(body).replace(
            "</CopyPartResult>",
            f"<Checksum{algorithm}>{value}</Checksum{algorithm}></CopyPartResult>",
            1,
        )
        headers["content-length"] = str(len(body.encode("utf-8")))
    if multipart is not None:
        headers.update(_customer_key_headers(getattr(multipart, "sse_customer_key_md5", None)))
    return status, headers, body


S3Response.upload_part_copy = _upload_part_copy_as_s3_does

_key_response_post = S3Response._key_response_post


def _key_response_post_as_s3_does(self, request, body, bucket_name, query, key_name):
    if body == b"" and "uploads" in query:
        return _create_multipart_upload(self, request, body, bucket_name, query, key_name)
    if query.get("uploadId"):
        return _complete_multipart_upload(self, request, body, bucket_name, query, key_name)
    return _key_response_post(self, request, body, bucket_name, query, key_name)


def _create_multipart_upload(self, request, body, bucket_name, query, key_name):
    algorithm = self.headers.get("x-amz-checksum-algorithm", "").upper()
    checksum_type = self.headers.get("x-amz-checksum-type", "").upper()
    if checksum_type and checksum_type not in ("COMPOSITE", "FULL_OBJECT"):
        raise _Refusal("InvalidRequest", "Value for x-amz-checksum-type header is invalid.")
    if checksum_type and not algorithm:
        raise _Refusal(
            "InvalidRequest",
            "The x-amz-checksum-type header can only be used with the "
            "x-amz-checksum-algorithm header.",
        )
    if algorithm in ALGORITHMS:
        default = "FULL_OBJECT" if algorithm == "CRC64NVME" else "COMPOSITE"
        checksum_type = checksum_type or default
        if (checksum_type == "FULL_OBJECT" and algorithm not in FULL_OBJECT_ALGORITHMS) or (
            checksum_type == "COMPOSITE" and algorithm == "CRC64NVME"
        ):
            raise _Refusal(
                "InvalidRequest",
                f"The {checksum_type} checksum type cannot be used with the "
                f"{algorithm.lower()} checksum algorithm.",
            )
    customer_key = _customer_key(self.headers)
    _created.multipart = None
    status, headers, resp_body = _key_response_post(
        self, request, body, bucket_name, query, key_name
    )
    multipart = _created.multipart
    if multipart is None:
        return status, headers, resp_body
    if algorithm in ALGORITHMS:
        _upload_checksums[multipart.id] = (algorithm, checksum_type)
        # moto lists the upload's algorithm and type (ListMultipartUploads) from these.
        multipart.metadata["x-amz-checksum-algorithm"] = algorithm
        multipart.metadata["x-amz-checksum-type"] = checksum_type
        _without_checksums(headers)
        headers["x-amz-checksum-algorithm"] = algorithm
        headers["x-amz-checksum-type"] = checksum_type
    if customer_key:
        multipart.sse_customer_key_md5 = customer_key
        headers.update(_customer_key_headers(customer_key))
    return status, headers, resp_body


def _listed_parts(body):
    """The parts a CompleteMultipartUpload lists: (number, {element: text}) in order."""
    try:
        parts = minidom.parseString(body).getElementsByTagName("Part")
    except Exception:
        return []  # moto answers its own error
    listed = []
    for part in parts:
        fields = {
            child.tagName: child.firstChild.wholeText.strip()
            for child in part.childNodes
            if child.nodeType == child.ELEMENT_NODE and child.firstChild is not None
        }
        try:
            listed.append((int(fields.get("PartNumber")), fields))
        except (TypeError, ValueError):
            pass
    return listed


def _completed_checksum(self, upload_id, multipart, listed):
    """The checksum (without `-<parts>`) of the object an upload created with a
    checksum algorithm is completed into, after refusing, as S3 does, a completion
    whose part checksums, object checksum or type differ; None where parts are
    missing (moto refuses those: InvalidPart)."""
    algorithm, checksum_type = _upload_checksums[upload_id]
    for number, fields in listed:
        recorded = _part_checksums.get((upload_id, number))
        if recorded is None:
            return None
        given = fields.get(f"Checksum{algorithm}")
        if given is None and checksum_type == "COMPOSITE":
            raise _Refusal(
                "InvalidRequest",
                f"The upload was created using a {algorithm.lower()} checksum. The complete "
                "request must include the checksum for each part. It was missing for part "
                f"{number} in the request.",
            )
        if given is not None and given != recorded[1]:
            raise InvalidPart()
    numbers = [number for number, _ in listed]
    if checksum_type == "COMPOSITE":
        digests = b"".join(base64.b64decode(_part_checksums[(upload_id, n)][1]) for n in numbers)
        value = _checksum(digests, algorithm)
        accepted = (value, f"{value}-{len(numbers)}")
    else:
        value = _checksum(b"".join(multipart.parts[n].value for n in numbers), algorithm)
        accepted = (value,)
    sent = self.headers.get(f"x-amz-checksum-{algorithm.lower()}")
    if sent and sent not in accepted:
        raise _bad_digest(algorithm.lower())
    sent_type = self.headers.get("x-amz-checksum-type", "").upper()
    if sent_type and sent_type != checksum_type:
        raise _Refusal(
            "BadDigest",
            f"The upload was created using the {checksum_type} checksum type. The complete "
            "request must use the same checksum type.",
        )
    return value


def _complete_multipart_upload(self, request, body, bucket_name, query, key_name):
    upload_id = query["uploadId"][0]
    try:
        multipart = self.backend.get_bucket(bucket_name).multiparts.get(upload_id)
    except S3ClientError:
        multipart = None
    if multipart is None:
        # Completed already (moto answers again) or unknown (moto's error).
        return _key_response_post(self, request, body, bucket_name, query, key_name)
    listed = _listed_parts(body)
    value = None
    if upload_id in _upload_checksums:
        value = _completed_checksum(self, upload_id, multipart, listed)
    _created.key = None
    status, headers, resp_body = _key_response_post(
        self, request, body, bucket_name, query, key_name
    )
    key = _created.key
    if status != 200 or key is None:
        return status, headers, resp_body
    _completed_parts[upload_id] = [number for number, _ in listed]
    if value is not None:
        algorithm, checksum_type = _upload_checksums[upload_id]
        key.checksum_algorithm, key.checksum_value = algorithm, value
        key.checksum_type, key.checksum_parts = checksum_type, len(listed)
        shown = f"{value}-{len(listed)}" if checksum_type == "COMPOSITE" else value
        resp_body = _to_text(resp_body).replace(
            "</CompleteMultipartUploadResult>",
            f"<Checksum{algorithm}>{shown}</Checksum{algorithm}>"
            f"<ChecksumType>{checksum_type}</ChecksumType></CompleteMultipartUploadResult>",
            1,
        )
        headers["content-length"] = str(len(resp_body.encode("utf-8")))
    _store_customer_key(key, getattr(multipart, "sse_customer_key_md5", None), headers, echo=False)
    return status, headers, resp_body


S3Response._key_response_post = _key_response_post_as_s3_does

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
    # S3 gives the milliseconds: uploads begun within one second are told apart.
    _initiated[self.id] = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    _created.multipart = self


FakeMultipart.__init__ = _multipart_init_as_s3_does

_set_part = FakeMultipart.set_part


def _set_part_as_s3_does(self, part_id, value):
    # Each part's checksum in its upload's algorithm (UploadPart, UploadPartCopy).
    key = _set_part(self, part_id, value)
    if self.id in _upload_checksums:
        algorithm = _upload_checksums[self.id][0]
        _part_checksums[(self.id, part_id)] = (algorithm, _checksum(key.value, algorithm))
    return key


FakeMultipart.set_part = _set_part_as_s3_does
FakeMultipart.list_parts = _list_parts_as_s3_does
S3Backend.is_truncated = _is_truncated_as_s3_does

if __name__ == "__main__":
    sys.exit(main())
