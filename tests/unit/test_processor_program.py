"""The program the processor image runs, exercised on the host on real inputs.

(The container around it, its sandbox settings and its wiring into jobs come with the
file-jobs work; these tests pin what each processor computes.)
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

PROGRAM = Path(__file__).resolve().parents[2] / "deploy" / "processors" / "dockyard_process.py"


def run(tmp_path: Path, name: str, data: bytes, params: dict, filename: str = "input.bin"):
    source = tmp_path / filename
    source.write_bytes(data)
    out = tmp_path / "out"
    completed = subprocess.run(
        [sys.executable, str(PROGRAM), name, str(source), str(out)],
        env={**os.environ, "DOCKYARD_PARAMS": json.dumps(params)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    result = json.loads((out / "result.json").read_text()) if completed.returncode == 0 else None
    return completed, result, out


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_thumbnail_fits_the_box_keeping_aspect_ratio(tmp_path) -> None:
    completed, result, out = run(
        tmp_path, "image.thumbnail", png(800, 400), {"width": 100, "height": 100}, "photo.png"
    )
    assert completed.returncode == 0, completed.stderr
    assert result["filename"] == "photo-thumb.png"
    with Image.open(out / result["filename"]) as thumb:
        assert thumb.size == (100, 50)
    assert "DOCKYARD-PROGRESS 3 3 encoded" in completed.stdout


@pytest.mark.parametrize(("fmt", "pil"), [("jpeg", "JPEG"), ("webp", "WEBP"), ("png", "PNG")])
def test_convert(tmp_path, fmt: str, pil: str) -> None:
    completed, result, out = run(
        tmp_path, "image.convert", png(64, 32), {"format": fmt, "quality": 80}, "pic.png"
    )
    assert completed.returncode == 0, completed.stderr
    with Image.open(out / result["filename"]) as converted:
        assert converted.format == pil and converted.size == (64, 32)


def test_not_an_image_is_rejected(tmp_path) -> None:
    completed, _result, _out = run(
        tmp_path, "image.thumbnail", b"not an image", {"width": 10, "height": 10}
    )
    assert completed.returncode == 2
    assert "not a readable image" in completed.stderr


def test_csv_to_json_records(tmp_path) -> None:
    data = b"name;age\nada;36\nalan;41\n"
    completed, result, out = run(
        tmp_path, "csv.to_json", data, {"delimiter": ";", "header": True}, "people.csv"
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads((out / "people.json").read_text()) == [
        {"name": "ada", "age": "36"},
        {"name": "alan", "age": "41"},
    ]
    assert result["details"] == {"records": 2}


def test_text_stats(tmp_path) -> None:
    text = "the cat saw the dog\nThe dog ran\n"
    completed, result, _out = run(tmp_path, "text.stats", text.encode(), {}, "story.txt")
    assert completed.returncode == 0, completed.stderr
    stats = result["details"]
    assert (stats["lines"], stats["words"], stats["characters"]) == (2, 8, len(text))
    assert stats["top_words"][0] == {"word": "the", "count": 3}


@pytest.mark.parametrize(
    ("fmt", "decompress"),
    [("gzip", gzip.decompress), ("bz2", bz2.decompress), ("xz", lzma.decompress)],
)
def test_compress_round_trips(tmp_path, fmt: str, decompress) -> None:
    data = os.urandom(1000) * 3000  # 3 MB: several progress steps
    completed, result, out = run(
        tmp_path, "archive.compress", data, {"format": fmt, "level": 1}, "blob.bin"
    )
    assert completed.returncode == 0, completed.stderr
    assert decompress((out / result["filename"]).read_bytes()) == data
    assert completed.stdout.count("DOCKYARD-PROGRESS") >= 3


def test_checksums_match_hashlib(tmp_path) -> None:
    data = os.urandom(2 * 1024 * 1024 + 5)
    completed, result, _out = run(
        tmp_path, "file.checksum", data, {"algorithms": ["sha256", "sha1", "md5"]}
    )
    assert completed.returncode == 0, completed.stderr
    assert result["details"]["checksums"] == {
        name: hashlib.new(name, data).hexdigest() for name in ("sha256", "sha1", "md5")
    }
