"""Content type from a file's first bytes (magic numbers), never from its name or the
declared type: uploads are judged by what they are."""

from __future__ import annotations

_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"%PDF-", 0, "application/pdf"),
    (b"\x1f\x8b", 0, "application/gzip"),
    (b"BZh", 0, "application/x-bzip2"),
    (b"\xfd7zXZ\x00", 0, "application/x-xz"),
    (b"PK\x03\x04", 0, "application/zip"),
)
SNIFF_BYTES = 4096


def detect(head: bytes) -> str:
    """The content type of a file starting with `head` (read SNIFF_BYTES of it)."""
    for magic, offset, content_type in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return content_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if _is_text(head):
        return "text/csv" if _looks_like_csv(head) else "text/plain"
    return "application/octet-stream"


def _is_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        # A multi-byte character cut by the sniff window is still text.
        return error.start >= len(head) - 3
    return True


def _looks_like_csv(head: bytes) -> bool:
    lines = [line for line in head.decode("utf-8", "ignore").splitlines()[:10] if line.strip()]
    if len(lines) < 2:
        return False
    for delimiter in (",", ";", "\t", "|"):
        counts = {line.count(delimiter) for line in lines[:-1]}  # the last may be cut off
        if len(counts) == 1 and counts.pop() > 0:
            return True
    return False
