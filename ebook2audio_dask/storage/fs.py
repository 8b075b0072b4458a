"""fsspec helpers: every byte the project reads or writes goes through here.

Final files are *published* atomically: they appear at their final path only
once complete (local: write a temporary name in the same folder, then
``os.replace``; object stores: a single PUT / completed multipart upload,
which is atomic by nature).  Temporary names are short and fixed-length
(:func:`temp_name`), so they fit wherever the final name fits.  A book's
files are published together, all or nothing (:class:`Publication`).
"""

from __future__ import annotations

import os
import posixpath
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from ..errors import StorageError
from ..logs import get_logger

__all__ = [
    "Publication",
    "get_fs",
    "is_local",
    "join",
    "options_for",
    "publish_file",
    "stem_of",
    "temp_name",
    "write_bytes_atomic",
]

_LOCAL = ("file", "local")

logger = get_logger(__name__)


def _protocol(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "file"


def options_for(url: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """The fsspec options that apply to *url*.

    *storage_options* is either flat (``{"key": ..., "client_kwargs": {...}}``:
    used for every remote URL, ignored for local paths) or keyed by protocol
    (``{"s3": {...}, "gs": {...}}``: each URL gets its protocol's entry), so
    one run can read local books and write to S3 with S3-only options.
    S3 URLs also get finite timeouts, unless the user's options set them
    (:func:`_with_defaults`).
    """
    protocol = _protocol(url)
    if not storage_options:
        return _with_defaults(protocol, {})
    known = set(fsspec.available_protocols())
    if all(k in known and isinstance(v, dict) for k, v in storage_options.items()):
        if protocol == "s3a":
            protocol = "s3"
        return _with_defaults(protocol, dict(storage_options.get(protocol) or {}))
    return {} if protocol in _LOCAL else _with_defaults(protocol, dict(storage_options))


#: botocore's own attempts per request: one.  s3fs already retries timeouts and
#: throttling a few times within a second or two, and :mod:`.retry` covers what
#: outlasts that; botocore's five attempts on top multiplied a stuck connection
#: into minutes per call.
_BOTOCORE_RETRIES = {"total_max_attempts": 1, "mode": "standard"}


def _with_defaults(protocol: str, options: dict[str, Any]) -> dict[str, Any]:
    """*options* plus our defaults for *protocol*; what the user gave wins.

    S3 gets finite timeouts (``storage.connect-timeout``,
    ``storage.read-timeout``: botocore's and aiohttp's socket connect and
    read timeouts) and a single botocore attempt per request, so a
    connection that never completes or a server that never answers raises a
    timeout error, which :func:`.retry.with_retries` retries with backoff
    within ``storage.retry-seconds`` and then reports as a one-line
    :class:`StorageError`, instead of waiting forever.  Keys of the user's
    ``config_kwargs`` replace ours one by one (``retries`` as a whole).
    """
    if protocol not in ("s3", "s3a"):
        return options
    from .. import config

    ours: dict[str, Any] = {"retries": dict(_BOTOCORE_RETRIES)}
    for key, name in (("connect_timeout", "connect-timeout"), ("read_timeout", "read-timeout")):
        value = config.get(f"storage.{name}")
        if value is not None:
            ours[key] = float(value)
    options["config_kwargs"] = {**ours, **(options.get("config_kwargs") or {})}
    return options


def get_fs(url: str, storage_options: dict[str, Any] | None = None):
    """Return ``(filesystem, path)`` for *url* (``~`` expanded for local paths)."""
    if "://" not in url:
        url = os.path.abspath(os.path.expanduser(url))
    try:
        return url_to_fs(url, **options_for(url, storage_options))
    except (
        ValueError,
        ImportError,
    ) as exc:  # "Protocol not known: foo", "Install s3fs to access S3"
        if isinstance(exc, ValueError) and "protocol" not in str(exc).lower():
            raise
        from ..errors import UsageError

        raise UsageError(f"{url}: cannot use this URL: {exc}") from None


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


def temp_name() -> str:
    """A temporary file name, ``.e2a-<12 hex digits>.part``.

    22 bytes whatever the final name, so it fits wherever the final name
    fits (a long final name plus a suffix would not); hidden (a leading dot),
    so the chunk store's listing and ``ebook2audio report`` skip it.
    """
    return f".e2a-{uuid.uuid4().hex[:12]}.part"


def _beside(url: str) -> str:
    """A temporary URL in the folder of *url*."""
    return posixpath.join(posixpath.dirname(url), temp_name())


def _replace_local(path: str, fill: Callable[[str], None]) -> None:
    """Make the local file *path* appear complete: *fill* writes a temporary
    name in the same folder, which is then renamed (atomic on POSIX)."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, temp_name())
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
        return (
            "mode"
            in inspect.signature(
                fs._pipe_file if hasattr(fs, "_pipe_file") else fs.pipe_file
            ).parameters
        )
    except (TypeError, ValueError):
        return False


def _unsupported(exc: BaseException) -> bool:
    text = str(exc)
    return (
        isinstance(exc, (NotImplementedError, TypeError))
        or "NotImplemented" in text
        or "not supported" in text
    )


def publish_file(local_path: str, url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Move a finished local file to *url* atomically (the local file is consumed)."""
    from .retry import with_retries

    fs, path = get_fs(url, storage_options)
    if is_local(fs):

        def fill(
            tmp: str,
        ) -> None:  # same folder, so the final rename is atomic even across filesystems
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
    """Copy a local file to *path* on *fs* so that *path* is complete or absent.

    The local file stays.
    """
    if is_local(fs):
        _replace_local(path, lambda tmp: shutil.copyfile(local_path, tmp))
    else:
        fs.put_file(local_path, path)  # one PUT or a completed multipart upload


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@dataclass
class Publication:
    """A book's files, written under temporary names, then published together: all or nothing.

    :meth:`stage_file` and :meth:`stage_bytes` put each file at a temporary
    name (:func:`temp_name`) in its final folder: a local file is moved or
    written there, an object is uploaded to a temporary key (one PUT or a
    completed multipart upload).  Nothing is at a final path yet.

    :meth:`commit` then gives them their final names in one quick sequence
    (local: an atomic ``os.replace`` each, in the same folder; object stores:
    a server-side copy, then the temporary key is deleted).  A file already
    at a final path (an earlier run's) is set aside first (local: a hard
    link, no copy; object stores: a server-side copy) and put back if the
    sequence fails, so a failed publication leaves every final path as it
    was, and the new files are removed.  Once all are in place, the set-aside
    copies and the :attr:`stale` files are deleted.  :meth:`discard` removes
    what was staged (and the folders :meth:`own_folder` made, when empty).

    Only URLs are held (no storage options, no file system), so a
    publication travels from the merge task to the client, which publishes
    it together with the book's report.

    Attributes
    ----------
    files : list of (str, str)
        ``(temporary URL, final URL)`` of each staged file, in order.
    folders : list of str
        Local folders :meth:`own_folder` made.
    stale : list of str
        Final URLs deleted once the rest is published (an earlier run's
        dead-letter file).
    """

    files: list[tuple[str, str]] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)

    def own_folder(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        """Make the folder *url*, which holds files of this publication only (``--split chapters``).

        :meth:`discard` removes it again (when empty) if it did not exist before.
        """
        fs, path = get_fs(url, storage_options)
        if is_local(fs) and not os.path.isdir(path):
            os.makedirs(path)
            self.folders.append(url)

    def stage_file(
        self, local_path: str, url: str, storage_options: dict[str, Any] | None = None
    ) -> None:
        """Move the finished local file *local_path* to a temporary name beside *url*."""
        from .retry import with_retries

        temp = _beside(url)
        fs, path = get_fs(temp, storage_options)
        self.files.append((temp, url))
        if is_local(fs):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            shutil.move(local_path, path)  # same folder as the final name: its rename is atomic
            os.chmod(path, 0o666 & ~_umask())  # temp files are 0600; a published file is not
        else:

            def upload() -> None:
                fs.makedirs(fs._parent(path), exist_ok=True)
                fs.put_file(local_path, path)

            with_retries(upload, url=url, action="write the audiobook")
            os.unlink(local_path)

    def stage_bytes(
        self, data: bytes, url: str, storage_options: dict[str, Any] | None = None
    ) -> None:
        """Write *data* to a temporary name beside *url*."""
        from .retry import with_retries

        temp = _beside(url)
        fs, path = get_fs(temp, storage_options)
        self.files.append((temp, url))
        if is_local(fs):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        else:
            with_retries(lambda: fs.pipe_file(path, data), url=url, action="write")

    def commit(self, storage_options: dict[str, Any] | None = None) -> None:
        """Give every staged file its final name; on any failure put everything back and raise.

        Raises
        ------
        StorageError
            A final path is taken by a folder, or a rename/copy failed (after
            the transient errors were retried); the final paths are as they
            were before, the staged files are deleted.
        """
        from .retry import with_retries

        done: list[tuple[str, str | None]] = []  # (final URL, its earlier file set aside, or None)
        try:
            for _, final in self.files:
                fs, path = get_fs(final, storage_options)
                if is_local(fs) and os.path.isdir(path):
                    raise StorageError(f"{final}: cannot publish: a folder is in the way")
            for temp, final in self.files:
                kept = with_retries(
                    lambda final=final: _set_aside(final, storage_options),
                    url=final,
                    action="keep the earlier file",
                )
                done.append((final, kept))
                with_retries(
                    lambda temp=temp, final=final: _move(temp, final, storage_options),
                    url=final,
                    action="publish",
                )
        except BaseException:
            for final, kept in reversed(done):
                _put_back(final, kept, storage_options)
            self.discard(storage_options)
            raise
        for _, kept in done:
            if kept is not None:
                _remove(kept, storage_options)
        for url in self.stale:
            _remove(url, storage_options)
        self.files, self.folders, self.stale = [], [], []

    def discard(self, storage_options: dict[str, Any] | None = None) -> None:
        """Delete the staged files and the (empty) folders made for them; never raises."""
        for temp, _ in self.files:
            _remove(temp, storage_options)
        for url in reversed(self.folders):
            try:
                os.rmdir(get_fs(url, storage_options)[1])
            except OSError:  # not empty (a user's file), or already gone
                logger.debug("folder %s kept", url, exc_info=True)
        self.files, self.folders, self.stale = [], [], []


def _set_aside(url: str, storage_options: dict[str, Any] | None) -> str | None:
    """Keep the file at *url* under a temporary name (it stays at *url* too where possible)."""
    fs, path = get_fs(url, storage_options)
    if not (os.path.lexists(path) if is_local(fs) else fs.exists(path)):
        return None
    kept = _beside(url)
    _, kept_path = get_fs(kept, storage_options)
    if is_local(fs):
        try:
            os.link(path, kept_path, follow_symlinks=False)
        except OSError:  # no hard links here: move it (the final path is empty for a moment)
            os.replace(path, kept_path)
    else:
        fs.copy(path, kept_path)
    return kept


def _move(temp: str, final: str, storage_options: dict[str, Any] | None) -> None:
    fs, path = get_fs(final, storage_options)
    _, temp_path = get_fs(temp, storage_options)
    if is_local(fs):
        os.replace(temp_path, path)
    else:
        fs.copy(temp_path, path)
        _remove(temp, storage_options)


def _put_back(final: str, kept: str | None, storage_options: dict[str, Any] | None) -> None:
    """Undo one step of a failed commit: the earlier file back at *final*, or nothing there."""
    try:
        fs, path = get_fs(final, storage_options)
        if kept is None:
            _remove(final, storage_options)
        elif is_local(fs):
            os.replace(get_fs(kept, storage_options)[1], path)
        else:
            fs.copy(get_fs(kept, storage_options)[1], path)
            _remove(kept, storage_options)
    except Exception:
        logger.error(
            "could not put %s back (the earlier file is at %s)", final, kept, exc_info=True
        )


def _remove(url: str, storage_options: dict[str, Any] | None) -> None:
    """Delete the file at *url* if it is there; never raises."""
    try:
        fs, path = get_fs(url, storage_options)
        if is_local(fs):
            if os.path.lexists(path):
                os.unlink(path)
        elif fs.exists(path):
            fs.rm_file(path)
    except Exception:
        logger.warning("could not remove %s", url, exc_info=True)


def open_url(url: str, mode: str = "rb", storage_options: dict[str, Any] | None = None):
    """``fsspec.open`` with ``~`` expansion for local paths."""
    if "://" not in url:
        url = os.path.expanduser(url)
    return fsspec.open(url, mode, **options_for(url, storage_options))
