"""fsspec helpers: every byte the project reads or writes goes through here.

Final files are *published* atomically: they appear at their final path only
once complete (local: write a temporary name in the same folder, then
``os.replace``; object stores: a single PUT / completed multipart upload,
which is atomic by nature).
"""

from __future__ import annotations

import os
import posixpath
import shutil
import uuid
from typing import Any, Callable

import fsspec
from fsspec.core import url_to_fs

__all__ = ["get_fs", "join", "write_bytes_atomic", "publish_file", "stem_of", "is_local", "options_for"]

_LOCAL = ("file", "local")


def _protocol(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "file"


def options_for(url: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """The fsspec options that apply to *url*.

    *storage_options* is either flat (``{"key": ..., "client_kwargs": {...}}``:
    used for every remote URL, ignored for local paths) or keyed by protocol
    (``{"s3": {...}, "gs": {...}}``: each URL gets its protocol's entry), so
    one run can read local books and write to S3 with S3-only options.
    """
    if not storage_options:
        return {}
    protocol = _protocol(url)
    known = set(fsspec.available_protocols())
    if all(k in known and isinstance(v, dict) for k, v in storage_options.items()):
        if protocol == "s3a":
            protocol = "s3"
        return dict(storage_options.get(protocol) or {})
    return {} if protocol in _LOCAL else dict(storage_options)


def get_fs(url: str, storage_options: dict[str, Any] | None = None):
    """Return ``(filesystem, path)`` for *url* (``~`` expanded for local paths)."""
    if "://" not in url:
        url = os.path.abspath(os.path.expanduser(url))
    return url_to_fs(url, **options_for(url, storage_options))


def is_local(fs) -> bool:
    """True for the local filesystem."""
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def join(base: str, *parts: str) -> str:
    """Join URL/path parts with ``/`` (fsspec paths are POSIX-style)."""
    return posixpath.join(base.rstrip("/"), *parts)


def stem_of(url: str) -> str:
    """File name without its extension: ``s3://b/x/My Book.epub`` -> ``My Book``."""
    name = posixpath.basename(url.rstrip("/"))
    stem, _ = posixpath.splitext(name)
    return stem or name


def _replace_local(path: str, fill: Callable[[str], None]) -> None:
    """Make the local file *path* appear complete: *fill* writes a temporary
    name in the same folder, which is then renamed (atomic on POSIX)."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.part")
    try:
        fill(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes_atomic(fs, path: str, data: bytes, *, exclusive: bool = False) -> None:
    """Write *data* to *path* so that *path* never holds a partial file.

    Local: a temporary name in the same folder, then ``os.replace``.  Object
    stores: one PUT (atomic by nature); with *exclusive*, a conditional
    create (``If-None-Match: *`` on S3) where the backend supports it, so
    two writers of the same content-addressed object never overwrite each
    other (the second one finds it there, which is fine).
    """
    if is_local(fs):

        def fill(tmp: str) -> None:
            with open(tmp, "wb") as f:
                f.write(data)

        _replace_local(path, fill)
    elif exclusive and _supports_create(fs):
        try:
            fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            pass  # written by someone else: same key, same content
        except (OSError, ValueError, TypeError, NotImplementedError) as exc:
            if "PreconditionFailed" in str(exc) or "At least one of the pre-conditions" in str(exc):
                return  # already there (backends that answer 412 without mapping it)
            if not _unsupported(exc):
                raise
            _NO_CREATE.add(type(fs).__name__)  # this backend ignores/rejects conditional writes
            fs.pipe_file(path, data)
    else:
        fs.pipe_file(path, data)


_NO_CREATE: set[str] = set()


def _supports_create(fs) -> bool:
    import inspect

    if type(fs).__name__ in _NO_CREATE:
        return False
    try:
        return "mode" in inspect.signature(fs._pipe_file if hasattr(fs, "_pipe_file") else fs.pipe_file).parameters
    except (TypeError, ValueError):
        return False


def _unsupported(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, (NotImplementedError, TypeError)) or "NotImplemented" in text or "not supported" in text


def publish_file(local_path: str, url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Move a finished local file to *url* atomically (the local file is consumed)."""
    from .retry import with_retries

    fs, path = get_fs(url, storage_options)
    if is_local(fs):

        def fill(tmp: str) -> None:  # same folder, so the final rename is atomic even across filesystems
            shutil.move(local_path, tmp)
            os.chmod(tmp, 0o666 & ~_umask())  # temp files are 0600; a published file is not

        _replace_local(path, fill)
    else:
        # one PUT, or a multipart upload completed at the end: atomic either way
        def upload() -> None:
            fs.makedirs(fs._parent(path), exist_ok=True)
            fs.put_file(local_path, path)

        with_retries(upload, url=url, action="write the audiobook")
        os.unlink(local_path)


def publish_copy(fs, local_path: str, path: str) -> None:
    """Copy a local file to *path* on *fs* so that *path* is complete or absent (the local file stays)."""
    if is_local(fs):
        _replace_local(path, lambda tmp: shutil.copyfile(local_path, tmp))
    else:
        fs.put_file(local_path, path)  # one PUT or a completed multipart upload


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def open_url(url: str, mode: str = "rb", storage_options: dict[str, Any] | None = None):
    """``fsspec.open`` with ``~`` expansion for local paths."""
    if "://" not in url:
        url = os.path.expanduser(url)
    return fsspec.open(url, mode, **options_for(url, storage_options))
