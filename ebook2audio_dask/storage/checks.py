"""Checks of a run's inputs and output made before any cluster starts.

A mistake found here costs the user nothing: no cluster is started and no
book is synthesised only to fail at the end.  Each failure is a
:class:`~ebook2audio_dask.errors.UsageError` (exit code 2) naming the path.
"""

from __future__ import annotations

import os
import stat
import uuid
from typing import Any

from ..errors import UsageError
from .fs import get_fs, is_local

__all__ = ["check_input", "check_output"]


def check_input(url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Refuse an input that exists but is not a regular file (a FIFO, a device, a socket).

    Opening a FIFO blocks until someone writes to it, and a device can be
    endless: neither is a book.  A missing file is not refused here: it is
    the book's own failure, reported with the other books' results.
    Remote URLs are left to their reader (object stores hold only objects).
    """
    fs, path = get_fs(url, storage_options)
    if not is_local(fs):
        return
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing or unreadable: the book fails on its own, with its reason
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        return
    kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")  # fmt: skip
    raise UsageError(f"{url}: is {kind}, not an ebook file")


def check_output(url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Make sure the output folder *url* exists (creating it) and can be written to.

    Local folders get a real probe: a file is created in them and removed.
    A remote URL must not be an existing object (``s3://bucket/book.m4b`` is
    a file, not a folder).
    """
    fs, path = get_fs(url, storage_options)
    if not is_local(fs):
        try:
            is_file = fs.isfile(path)
        except Exception:  # noqa: BLE001 - a store that cannot answer yet fails later, with retries
            return
        if is_file:
            raise UsageError(f"{url}: the output must be a folder, and this is a file")
        return
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{url}: the output must be a folder, and this is a file")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".e2a-probe-{uuid.uuid4().hex[:12]}")
        with open(probe, "xb"):
            pass
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{url}: cannot write to the output folder: {exc.strerror or exc}") from None
