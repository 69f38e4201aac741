"""Uploads are typed by their bytes, not their names."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zipfile

import pytest

from shared.storage.content_types import detect


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "x")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "image/png"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 20, "image/jpeg"),
        (b"GIF89a" + b"\x00" * 10, "image/gif"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image/webp"),
        (gzip.compress(b"hello"), "application/gzip"),
        (bz2.compress(b"hello"), "application/x-bzip2"),
        (lzma.compress(b"hello"), "application/x-xz"),
        (_zip(), "application/zip"),
        (b"%PDF-1.7\n", "application/pdf"),
        (b"name,age\nada,36\nalan,41\n", "text/csv"),
        (b"a;b;c\n1;2;3\n4;5;6", "text/csv"),
        (b"Just some words.\nAnd a second line.\n", "text/plain"),
        ("héllo wörld, ça va\n".encode()[:-2] + "é".encode()[:1], "text/plain"),
        (b"\x00\x01\x02binary", "application/octet-stream"),
        (b"", "application/octet-stream"),
    ],
)
def test_detects_by_content(data: bytes, expected: str) -> None:
    assert detect(data) == expected


def test_a_png_named_csv_is_still_a_png() -> None:
    # The name never reaches the detector: only bytes do.
    assert detect(b"\x89PNG\r\n\x1a\n....") == "image/png"
