"""File processors: each runs `deploy/processors/dockyard_process.py` in a locked-down
container of the processor image, on one uploaded file.

Entries are declarative: what they accept (content types judged from magic bytes), their
parameters, the command inside the image, and the limits of one run. Workers of the `files`
fleet run them (workers/file_jobs.py); nothing here imports Docker.
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from shared.dispatch import queues
from shared.processors.registry import Kind, Limits, Processor, register, register_kind

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
TEXT_TYPES = ("text/plain", "text/csv")
ANY_TYPE = "*/*"
_FORMATS = ("png", "jpeg", "webp")
#: Algorithms offered by every Python build's hashlib.
CHECKSUM_ALGORITHMS = (
    "md5",
    "sha1",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "sha3_256",
    "sha3_512",
    "blake2b",
    "blake2s",
)


class ThumbnailParams(Schema):
    width = fields.Integer(
        required=True,
        validate=validate.Range(min=1, max=4096),
        metadata={"description": "Width of the box the image is fitted in (pixels)."},
    )
    height = fields.Integer(
        required=True,
        validate=validate.Range(min=1, max=4096),
        metadata={"description": "Height of the box the image is fitted in (pixels)."},
    )
    format = fields.String(
        load_default=None,
        validate=validate.OneOf(_FORMATS),
        metadata={"description": "Output format; default: the input's (PNG for GIF)."},
    )


class ConvertParams(Schema):
    format = fields.String(
        required=True,
        validate=validate.OneOf(_FORMATS),
        metadata={"description": "Output format."},
    )
    quality = fields.Integer(
        load_default=None,
        validate=validate.Range(min=1, max=100),
        metadata={"description": "JPEG/WebP quality, 1-100."},
    )


class CsvParams(Schema):
    delimiter = fields.String(
        load_default=",",
        validate=validate.OneOf([",", ";", "\t", "|"]),
        metadata={"description": "Field delimiter."},
    )
    header = fields.Boolean(
        load_default=True,
        metadata={"description": "First row names the fields (records are objects)."},
    )


class NoParams(Schema):
    pass


class CompressParams(Schema):
    format = fields.String(
        required=True,
        validate=validate.OneOf(["gzip", "bz2", "xz"]),
        metadata={"description": "Compression format."},
    )
    level = fields.Integer(
        load_default=None,
        validate=validate.Range(min=1, max=9),
        metadata={"description": "Compression level, 1 (fast) - 9 (small)."},
    )


class ChecksumParams(Schema):
    algorithms = fields.List(
        fields.String(validate=validate.OneOf(CHECKSUM_ALGORITHMS)),
        load_default=lambda: ["sha256"],
        validate=validate.Length(min=1, max=len(CHECKSUM_ALGORITHMS)),
        metadata={"description": "Digest algorithms to compute."},
    )


register_kind(Kind("file", submit_path="/jobs/files", downloadable=True, runs_in_image=True))


def _file_processor(
    name: str,
    description: str,
    params: type[Schema],
    accepts: tuple[str, ...],
    limits: Limits,
) -> Processor:
    return register(
        Processor(
            name=name,
            kind="file",
            description=description,
            input="file",
            params_schema=params,
            queue=queues.FILES,
            task_name=queues.TASK_FILE,
            accepts=accepts,
            command=(name, "{input}", "{output}"),
            limits=limits,
        )
    )


_IMAGE_LIMITS = Limits(memory_bytes=512 * 1024 * 1024, timeout_seconds=60)
_STREAM_LIMITS = Limits(memory_bytes=128 * 1024 * 1024, timeout_seconds=120)

_file_processor(
    "image.thumbnail",
    "Fit an image in a width x height box, keeping its aspect ratio.",
    ThumbnailParams,
    IMAGE_TYPES,
    _IMAGE_LIMITS,
)
_file_processor(
    "image.convert",
    "Convert an image to PNG, JPEG or WebP.",
    ConvertParams,
    IMAGE_TYPES,
    _IMAGE_LIMITS,
)
_file_processor(
    "csv.to_json",
    "Turn a CSV file into a JSON array of records.",
    CsvParams,
    TEXT_TYPES,
    Limits(memory_bytes=512 * 1024 * 1024, timeout_seconds=120),
)
_file_processor(
    "text.stats",
    "Count lines, words and characters and list the 20 most frequent words, as JSON.",
    NoParams,
    TEXT_TYPES,
    _STREAM_LIMITS,
)
_file_processor(
    "archive.compress",
    "Compress a file with gzip, bzip2 or xz.",
    CompressParams,
    (ANY_TYPE,),
    _STREAM_LIMITS,
)
_file_processor(
    "file.checksum",
    "Compute digests of a file (sha256, sha1, md5, ...).",
    ChecksumParams,
    (ANY_TYPE,),
    _STREAM_LIMITS,
)


def accepts(processor: Processor, content_type: str) -> bool:
    return ANY_TYPE in processor.accepts or content_type in processor.accepts
