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

from ..errors import Ebook2AudioError, UsageError, one_line
from .fs import get_fs, is_local
from .retry import with_retries

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
    if stat.S_ISFIFO(mode):
        kind = "a named pipe (FIFO)"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device"
    elif stat.S_ISSOCK(mode):
        kind = "a socket"
    else:
        kind = "not a regular file"
    raise UsageError(f"{url}: is {kind}, not an ebook file")


def check_output(url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Make sure the output folder *url* exists (creating it) and can be written to.

    A real probe: an empty file (object) named ``.e2a-probe-<hex>`` is
    written in the folder and deleted again, locally and on object stores
    (two requests), so a read-only folder, a missing bucket or credentials
    that may only read are found now, not after the books were synthesised.
    The output must not be an existing file (``-o book.m4b``).
    """
    fs, path = get_fs(url, storage_options)
    local = is_local(fs)
    try:
        is_file = os.path.isfile(path) if local else fs.isfile(path)
    except Exception:  # noqa: BLE001 - the probe below says what is wrong
        is_file = False
    if is_file or (local and os.path.exists(path) and not os.path.isdir(path)):
        raise UsageError(f"{url}: the output must be a folder, and this is a file")
    probe = f"{path.rstrip('/')}/.e2a-probe-{uuid.uuid4().hex[:12]}"
    try:
        if local:
            os.makedirs(path, exist_ok=True)
            with open(probe, "xb"):
                pass
            os.unlink(probe)
        else:
            with_retries(
                lambda: fs.pipe_file(probe, b""),
                url=url,
                action="write to the output folder",
                translate=False,
            )
            with_retries(
                lambda: fs.rm_file(probe),
                url=url,
                action="clean up the output folder",
                translate=False,
            )
    except Ebook2AudioError as exc:  # still failing after the retries
        raise UsageError(str(exc)) from None
    except FileNotFoundError:
        raise UsageError(
            f"{url}: cannot write to the output folder: no such bucket or folder"
        ) from None
    except PermissionError:
        raise UsageError(f"{url}: cannot write to the output folder: access denied") from None
    except Exception as exc:  # noqa: BLE001 - whatever the store answered, said in one line
        problem = getattr(exc, "strerror", None) or one_line(exc)
        raise UsageError(f"{url}: cannot write to the output folder: {problem}") from None
