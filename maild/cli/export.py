"""Writing a ticket's stored attachments to a folder: ``maild attachment``.

The names were sanitized when the mail arrived, but they are checked again
here: whatever a name says (``../../etc/passwd``, ``/tmp/x``, ``C:\\evil``,
control characters), the file lands directly inside the chosen folder. An
existing file, or a symlink planted under the same name, is never written
through: the new file gets a free name (``report-2.pdf``) instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["safe_filename", "write_attachments"]

_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
_MAX_NAME = 200


def safe_filename(name: str) -> str:
    """A file name with no folder part, no control characters and no leading dot."""
    base = re.split(r"[/\\]", name)[-1]
    base = _UNSAFE.sub("", base).strip().lstrip(".").strip()
    if ":" in base:  # a Windows drive or an NTFS stream
        base = base.replace(":", "_")
    if not base:
        return "attachment"
    # file systems count bytes (255 at most on most of them), not characters
    stem, dot, ext = base.rpartition(".")
    if not (dot and stem and 0 < len(ext) <= 16):
        stem, ext = base, ""
    tail = f".{ext}" if ext else ""
    while len((stem + tail).encode("utf-8", "surrogatepass")) > _MAX_NAME:
        stem = stem[:-1]
    return stem + tail if stem else "attachment" + tail


def _candidates(name: str) -> Iterable[str]:
    yield name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    for n in range(2, 10_000):
        yield f"{stem}-{n}.{ext}" if ext else f"{stem}-{n}"


def write_attachments(items: Iterable[Mapping[str, Any]], directory: Path) -> list[dict[str, Any]]:
    """Write each item's ``content`` into ``directory`` (created if missing).

    Returns, per item, its ``filename``, ``content_type``, ``size``,
    ``message_id`` and the ``path`` written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    folder = directory.resolve()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    written: list[dict[str, Any]] = []
    for item in items:
        content: bytes = item["content"]
        for name in _candidates(safe_filename(str(item["filename"]))):
            target = folder / name
            if target.parent != folder:  # cannot happen after safe_filename; never trust it
                raise ValueError(f"refusing to write outside {folder}: {name!r}")
            try:
                fd = os.open(target, flags, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
            break
        else:
            raise FileExistsError(f"no free name for {item['filename']!r} in {folder}")
        written.append(
            {
                "filename": item["filename"],
                "content_type": item["content_type"],
                "size": item["size"],
                "message_id": item.get("message_id"),
                "path": str(target),
            }
        )
    return written
