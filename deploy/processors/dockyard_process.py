"""The program inside the processor image: `dockyard_process.py NAME INPUT OUTPUT_DIR`.

It runs in a locked-down container (no network, read-only root, non-root user), reads the
parameters as JSON from $DOCKYARD_PARAMS, writes one result file and `result.json` (file
name, content type, details) into OUTPUT_DIR, and reports progress on stdout as lines
`DOCKYARD-PROGRESS <current> <total> <message>`, which the worker turns into job progress.
Exit status 0: done; 2: the input is unusable (a permanent failure); anything else: error.
With DOCKYARD_INPUT=stdin-tar (how the worker runs it) the inputs arrive as a tar on stdin and
the output files leave as a tar on stdout after a `DOCKYARD-OUTPUT-TAR` line.
Standard library only, plus Pillow for images.
"""

from __future__ import annotations

import bz2
import collections
import csv
import gzip
import hashlib
import json
import lzma
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

CHUNK = 1024 * 1024
EXIT_REJECTED = 2
OUTPUT_MARKER = b"DOCKYARD-OUTPUT-TAR"


class Rejected(Exception):
    """The input cannot be processed as asked."""


def progress(current: int, total: int, message: str) -> None:
    print(f"DOCKYARD-PROGRESS {current} {total} {message}", flush=True)


def _stem(path: Path) -> str:
    return path.name.rsplit(".", 1)[0] or "file"


def _image(path: Path):  # noqa: ANN202 - Pillow's Image
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError) as error:
        raise Rejected(f"not a readable image: {error}") from error
    return image


_IMAGE_FORMATS = {
    "png": ("PNG", "image/png"),
    "jpeg": ("JPEG", "image/jpeg"),
    "webp": ("WEBP", "image/webp"),
}


def _save_image(image, out_dir: Path, stem: str, fmt: str, quality: int | None) -> dict:  # noqa: ANN001
    pil_format, content_type = _IMAGE_FORMATS[fmt]
    if pil_format == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    filename = f"{stem}.{fmt}"
    options = {"quality": quality} if quality and pil_format in ("JPEG", "WEBP") else {}
    image.save(out_dir / filename, format=pil_format, **options)
    return {
        "filename": filename,
        "content_type": content_type,
        "details": {"width": image.width, "height": image.height, "format": fmt},
    }


def image_thumbnail(src: Path, out: Path, params: dict[str, Any]) -> dict:
    image = _image(src)
    progress(1, 3, "decoded")
    image.thumbnail((int(params["width"]), int(params["height"])))
    progress(2, 3, "resized")
    fmt = params.get("format") or (
        "jpeg" if image.format == "JPEG" else "webp" if image.format == "WEBP" else "png"
    )
    result = _save_image(image, out, _stem(src) + "-thumb", fmt, None)
    progress(3, 3, "encoded")
    return result


def image_convert(src: Path, out: Path, params: dict[str, Any]) -> dict:
    image = _image(src)
    progress(1, 2, "decoded")
    result = _save_image(image, out, _stem(src), params["format"], params.get("quality"))
    progress(2, 2, "encoded")
    return result


def csv_to_json(src: Path, out: Path, params: dict[str, Any]) -> dict:
    delimiter = params.get("delimiter") or ","
    header = params.get("header", True)
    try:
        with src.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle, delimiter=delimiter))
    except (UnicodeDecodeError, csv.Error) as error:
        raise Rejected(f"not a readable CSV file: {error}") from error
    progress(1, 2, f"parsed {len(rows)} rows")
    if header and rows:
        names, body = rows[0], rows[1:]
        records: list[Any] = [dict(zip(names, row, strict=False)) for row in body]
    else:
        records = rows
    filename = f"{_stem(src)}.json"
    (out / filename).write_text(json.dumps(records, ensure_ascii=False))
    progress(2, 2, "written")
    return {
        "filename": filename,
        "content_type": "application/json",
        "details": {"records": len(records)},
    }


_WORD = re.compile(r"[\w']+", re.UNICODE)


def text_stats(src: Path, out: Path, params: dict[str, Any]) -> dict:
    lines = words = characters = 0
    counts: collections.Counter[str] = collections.Counter()
    try:
        with src.open(encoding="utf-8") as handle:
            for line in handle:
                lines += 1
                characters += len(line)
                found = _WORD.findall(line.lower())
                words += len(line.split())
                counts.update(found)
    except UnicodeDecodeError as error:
        raise Rejected(f"not UTF-8 text: {error}") from error
    progress(1, 1, "counted")
    stats = {
        "lines": lines,
        "words": words,
        "characters": characters,
        "top_words": [{"word": w, "count": c} for w, c in counts.most_common(20)],
    }
    filename = f"{_stem(src)}-stats.json"
    (out / filename).write_text(json.dumps(stats, ensure_ascii=False))
    return {"filename": filename, "content_type": "application/json", "details": stats}


_COMPRESSORS: dict[str, tuple[Callable[..., Any], str, str, int]] = {
    "gzip": (gzip.open, "gz", "application/gzip", 9),
    "bz2": (bz2.open, "bz2", "application/x-bzip2", 9),
    "xz": (lzma.open, "xz", "application/x-xz", 6),
}


def archive_compress(src: Path, out: Path, params: dict[str, Any]) -> dict:
    opener, suffix, content_type, default_level = _COMPRESSORS[params["format"]]
    level = params.get("level") or default_level
    filename = f"{src.name}.{suffix}"
    option = {"preset": level} if params["format"] == "xz" else {"compresslevel": level}
    total = max(1, src.stat().st_size)
    done = 0
    with src.open("rb") as reader, opener(out / filename, "wb", **option) as writer:
        while chunk := reader.read(CHUNK):
            writer.write(chunk)
            done += len(chunk)
            progress(done, total, "compressing")
    return {
        "filename": filename,
        "content_type": content_type,
        "details": {
            "input_bytes": src.stat().st_size,
            "output_bytes": (out / filename).stat().st_size,
        },
    }


def file_checksum(src: Path, out: Path, params: dict[str, Any]) -> dict:
    hashers = {name: hashlib.new(name) for name in params["algorithms"]}
    total = max(1, src.stat().st_size)
    done = 0
    with src.open("rb") as reader:
        while chunk := reader.read(CHUNK):
            for hasher in hashers.values():
                hasher.update(chunk)
            done += len(chunk)
            progress(done, total, "hashing")
    digests = {name: hasher.hexdigest() for name, hasher in hashers.items()}
    filename = f"{src.name}.checksums.json"
    (out / filename).write_text(json.dumps(digests))
    return {
        "filename": filename,
        "content_type": "application/json",
        "details": {"checksums": digests, "bytes": src.stat().st_size},
    }


PROCESSORS: dict[str, Callable[[Path, Path, dict[str, Any]], dict]] = {
    "image.thumbnail": image_thumbnail,
    "image.convert": image_convert,
    "csv.to_json": csv_to_json,
    "text.stats": text_stats,
    "archive.compress": archive_compress,
    "file.checksum": file_checksum,
}


def receive_inputs(stream: BinaryIO, directory: Path) -> None:
    """Unpack the tar stream the worker sends on stdin (DOCKYARD_INPUT=stdin-tar): plain
    files only, each by its bare name, so nothing lands outside `directory`."""
    import tarfile

    directory.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            name = member.name.rsplit("/", 1)[-1]
            if not member.isfile() or not name or name.startswith("."):
                continue
            source = archive.extractfile(member)
            if source is None:
                continue
            with (directory / name).open("wb") as target:
                while chunk := source.read(CHUNK):
                    target.write(chunk)


def send_outputs(directory: Path, stream: BinaryIO) -> None:
    """After every progress line, the marker and then the output files as a tar on stdout:
    the worker reads them from the same attached stream, no copy out of the container."""
    import tarfile

    sys.stdout.flush()
    stream.write(OUTPUT_MARKER + b"\n")
    with tarfile.open(fileobj=stream, mode="w|") as archive:
        for path in sorted(directory.iterdir()):
            if path.is_file():
                archive.add(path, arcname=path.name)
    stream.flush()


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in PROCESSORS:
        print(
            f"usage: dockyard_process.py {{{'|'.join(PROCESSORS)}}} INPUT OUTPUT_DIR",
            file=sys.stderr,
        )
        return 64
    name, source, out_dir = argv[0], Path(argv[1]), Path(argv[2])
    if os.environ.get("DOCKYARD_INPUT") == "stdin-tar":
        receive_inputs(sys.stdin.buffer, source.parent)
    params = json.loads(os.environ.get("DOCKYARD_PARAMS") or "{}")
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        result = PROCESSORS[name](source, out_dir, params)
    except Rejected as error:
        print(f"rejected: {error}", file=sys.stderr)
        return EXIT_REJECTED
    (out_dir / "result.json").write_text(json.dumps(result))
    if os.environ.get("DOCKYARD_INPUT") == "stdin-tar":
        send_outputs(out_dir, sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
