"""Uploads: a book streamed to disk under a generated name, within the size and count limits.

:func:`receive_upload` streams the request body to
``<data>/uploads/<uuid4 hex>.part``, counting bytes: a ``Content-Length`` over
``max_upload_size`` is refused before anything is read, and a body that grows
past it is cut off (413) with the partial file deleted, so nothing of it is
kept.  The finished file is renamed to ``<hex><suffix>``: the suffix is one of
the book suffixes the readers know, taken from the client's file name, which is
otherwise only kept (made safe) as a display name.  The book is then read off
the event loop (:func:`read_summary`); a book that cannot be read is stored
anyway with its one-line ``error`` (its job's book fails with it, and no other).
Its cover, if any, is kept beside it as ``<hex>.cover``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
import unicodedata
import uuid
from pathlib import Path
from typing import Any

from ..errors import one_line

__all__ = [
    "UploadRefused",
    "cover_path",
    "display_name",
    "read_summary",
    "receive_upload",
    "stored_suffix",
]

#: Longest display name kept (characters).
_NAME_MAX = 200
#: Books read at once for their summaries (each holds a parsed book in memory).
_READS = threading.BoundedSemaphore(2)
_UNSAFE_CHARS = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


class UploadRefused(Exception):
    """An upload the server will not take: *status* (413, 429, 400) and a one-line *detail*."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def display_name(filename: str | None) -> str:
    """The client's file name made safe to show: its last path part, no control or bidi
    characters, at most 200 characters; ``"upload"`` when nothing is left."""
    name = unicodedata.normalize("NFC", filename or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_CHARS.sub("", name).strip().strip(".").strip()
    if len(name) > _NAME_MAX:
        stem, dot, ext = name.rpartition(".")
        ext = ext if dot and len(ext) <= 10 else ""
        name = name[: _NAME_MAX - len(ext) - 1].rstrip() + ("." + ext if ext else "")
    return name or "upload"


def stored_suffix(filename: str | None) -> str:
    """The book suffix (``.epub``, ``.fb2.zip``...) the stored file gets: the longest of the
    known book suffixes the client's name ends with, else none (the reader then goes by
    the content)."""
    from ..ingest.registry import BOOK_SUFFIXES

    name = (filename or "").lower()
    found = [s for s in BOOK_SUFFIXES if name.endswith(s)]
    return max(found, key=len) if found else ""


def cover_path(book_path: str | Path) -> Path:
    """Where the cover of the upload stored at *book_path* is kept."""
    path = Path(book_path)
    return path.with_name(path.name.split(".", 1)[0] + ".cover")


def read_summary(
    path: str | Path, name: str | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """Read the stored book at *path*: ``(summary, None)``, or ``(None, one-line error)``.

    Blocking (run it in a thread).  The summary is :meth:`Book.summary` with
    its ``source`` (a server path) left out; the cover's bytes are written to
    :func:`cover_path`.  The error names the book *name* (its display name), not
    the server's path.  At most two books are read at once.
    """
    from ..ingest import read_book

    with _READS:
        try:
            book = read_book(str(path), include_matter=True)
            summary = book.summary()
        except Exception as exc:  # noqa: BLE001 - a hostile book is stored, flagged
            text = one_line(exc) or type(exc).__name__
            return None, text.replace(str(path), name or Path(path).name)
    summary.pop("source", None)
    if book.cover is not None:
        try:
            cover_path(path).write_bytes(book.cover.data)
        except OSError:
            summary["cover"] = None
    return summary, None


async def receive_upload(request, settings, store, filename: str | None) -> dict[str, Any]:
    """Stream *request*'s body into the uploads folder and record it in *store*.

    Returns
    -------
    dict
        The store's upload record.

    Raises
    ------
    UploadRefused
        429 too many pending uploads, 413 over ``max_upload_size`` (nothing
        kept), 400 an empty body or a body cut short.
    """
    import anyio

    limit = settings.max_upload_size
    if await anyio.to_thread.run_sync(store.pending_uploads) >= settings.max_pending_uploads:
        raise UploadRefused(
            429,
            f"too many uploads waiting for a job ({settings.max_pending_uploads}, "
            "ebook2audio.serve.max-pending-uploads): delete some or submit them",
        )
    too_big = UploadRefused(
        413, f"upload larger than {limit} bytes (ebook2audio.serve.max-upload-size)"
    )
    length = request.headers.get("content-length")
    if length is not None:
        try:
            if int(length) > limit:
                raise too_big
        except ValueError:
            raise UploadRefused(400, "bad Content-Length header") from None
    folder = settings.uploads_dir
    folder.mkdir(parents=True, exist_ok=True)
    key = uuid.uuid4().hex
    part = folder / f"{key}.part"
    size = 0
    kept = False
    try:
        with open(part, "xb") as out:
            async for block in request.stream():
                size += len(block)
                if size > limit:
                    raise too_big
                if block:
                    out.write(block)
        if size == 0:
            raise UploadRefused(400, "empty upload")
        final = folder / f"{key}{stored_suffix(filename)}"
        os.replace(part, final)
        kept = True
    finally:
        if not kept:
            with contextlib.suppress(OSError):
                part.unlink()
    name = display_name(filename)
    summary, error = await anyio.to_thread.run_sync(read_summary, final, name)
    try:
        add = functools.partial(store.add_upload, name=name, path=str(final), size=size,
                                summary=summary, error=error)  # fmt: skip
        return await anyio.to_thread.run_sync(add)  # the store's lock: off the event loop
    except BaseException:
        for stale in (final, cover_path(final)):
            with contextlib.suppress(OSError):
                stale.unlink()
        raise
