"""The content-addressed chunk store.

Every synthesised chunk is written as a small WAV file named by its content
key, under ``<store>/<engine>/<key[:2]>/<key>.wav``, as soon as it exists.
A chunk already in the store is never synthesised again, so an interrupted
conversion resumes where it stopped and two books sharing text share audio.
The store is any fsspec URL: a local folder, ``s3://bucket/prefix``...
Engines may also keep computed voices there (``<store>/<engine>/voices/``,
e.g. XTTS speaker conditioning), shared by every worker.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from ..audio.wav import WAV_HEADER_BYTES, wav_complete
from ..errors import StorageError
from .fs import get_fs, join, write_bytes_atomic
from .retry import with_retries

__all__ = ["ENCODED", "ChunkEntry", "ChunkStore"]

#: Concurrent metadata requests of :meth:`ChunkStore.sizes` on a remote store.
LOOKUP_THREADS = 16

#: Folder of the store that keeps encoded book audio (not an engine name).
ENCODED = "encoded"


@dataclass(frozen=True)
class ChunkEntry:
    """One object of the store: a chunk (``kind="chunk"``) or a computed voice."""

    engine: str
    key: str
    size: int
    modified: float  # POSIX time; 0.0 when the store does not say
    path: str
    kind: str = "chunk"


def _modified(info: dict[str, Any]) -> float:
    value = (
        info.get("mtime")
        or info.get("LastModified")
        or info.get("last_modified")
        or info.get("updated")
    )
    if value is None:
        return 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    try:
        return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


@dataclass(frozen=True)
class ChunkStore:
    """A chunk store at *url*.

    Every call to the store retries transient errors (throttling, 5xx,
    connection resets) with backoff and turns permanent ones (no such bucket,
    access denied) into a one-line :class:`~ebook2audio_dask.errors.StorageError`.

    Parameters
    ----------
    url : str
        Folder or prefix (``~/.cache/ebook2audio/chunks``, ``s3://bucket/chunks``).
    storage_options : tuple of (str, value) pairs
        fsspec options for *url* (flat, or keyed by protocol), as sorted
        pairs.  Use :meth:`make` to pass a dict.  Not part of equality or repr
        (they may hold credentials).
    """

    url: str
    storage_options: tuple[tuple[str, Any], ...] = field(
        default=(), repr=False, compare=False, hash=False
    )

    @classmethod
    def make(cls, url: str, storage_options: dict[str, Any] | None = None) -> ChunkStore:
        return cls(url, tuple(sorted((storage_options or {}).items())))

    @property
    def fs_and_root(self):
        return get_fs(self.url, dict(self.storage_options))

    def path(self, engine: str, key: str) -> str:
        """Where the chunk *key* of *engine* lives in the store."""
        _, root = self.fs_and_root
        return join(root, engine, key[:2], f"{key}.wav")

    def _url(self, *parts: str) -> str:
        return join(self.url, *parts)

    def list_sizes(self, engine: str) -> dict[str, int]:
        """Every complete chunk of *engine* in the store: ``{key: size in bytes}``.

        One recursive listing per call (not one request per chunk).  Files
        too small to hold a WAV header are ignored.
        """
        fs, root = self.fs_and_root
        base = join(root, engine)

        def listing():
            try:
                return fs.find(base, detail=True)
            except FileNotFoundError:
                return {}

        found = with_retries(listing, url=self._url(engine), action="list the chunk store")
        sizes: dict[str, int] = {}
        for path, info in found.items():
            name = path.rsplit("/", 1)[-1]
            if not name.endswith(".wav") or name.startswith("."):
                continue
            size = int(info.get("size") or 0)
            if size >= WAV_HEADER_BYTES:
                sizes[name[:-4]] = size
        return sizes

    def sizes(self, engine: str, keys: list[str]) -> dict[str, int]:
        """Sizes of those of *keys* already in the store (one metadata request each).

        What a book asks before its synthesis (and a task before redoing
        chunks a killed earlier attempt of it wrote): the cost grows with the
        keys asked about, never with the size of the store.  Remote stores
        are asked :data:`LOOKUP_THREADS` keys at a time.
        """
        fs, _ = self.fs_and_root

        def one(key: str) -> tuple[str, int | None]:
            path = self.path(engine, key)

            def info():
                try:
                    return fs.info(path)
                except FileNotFoundError:
                    return None

            found = with_retries(
                info, url=self._url(engine, key[:2], f"{key}.wav"), action="look up the chunk"
            )
            size = int(found.get("size") or 0) if found is not None else 0
            return key, size if size >= WAV_HEADER_BYTES else None

        protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
        if len(keys) < 4 or "file" in protocols or "local" in protocols:
            found = map(one, keys)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(
                min(LOOKUP_THREADS, len(keys)), thread_name_prefix="e2a-lookup"
            ) as pool:
                found = list(pool.map(one, keys))
        return {key: size for key, size in found if size is not None}

    def entries(self) -> list[ChunkEntry]:
        """Every chunk and stored voice, of every engine (one recursive listing)."""
        fs, root = self.fs_and_root

        def listing():
            try:
                return fs.find(root, detail=True)
            except FileNotFoundError:
                return {}

        out = []
        prefix = root.rstrip("/") + "/"
        for path, info in with_retries(
            listing, url=self.url, action="list the chunk store"
        ).items():
            rel = path[len(prefix) :] if path.startswith(prefix) else path
            parts = rel.split("/")
            name = parts[-1]
            if len(parts) < 3 or name.startswith("."):
                continue
            kind = "audio" if parts[0] == ENCODED else "voice" if parts[1] == "voices" else "chunk"
            if kind == "chunk" and not name.endswith(".wav"):
                continue
            out.append(ChunkEntry(parts[0], name.rsplit(".", 1)[0], int(info.get("size") or 0),
                                  _modified(info), path, kind))  # fmt: skip
        return out

    def delete(self, paths: list[str]) -> None:
        """Delete objects of the store (paths as :meth:`entries` gives them)."""
        if not paths:
            return
        fs, _ = self.fs_and_root
        with_retries(lambda: fs.rm(paths), url=self.url, action="delete from the chunk store")

    def write(self, engine: str, key: str, wav: bytes) -> None:
        """Store one chunk's WAV bytes: complete or not at all.

        Exclusive create where supported.
        """
        fs, _ = self.fs_and_root
        path = self.path(engine, key)
        with_retries(
            lambda: write_bytes_atomic(fs, path, wav, exclusive=True),
            url=self._url(engine, key[:2], f"{key}.wav"),
            action="write the chunk",
        )

    def read(self, engine: str, key: str) -> bytes:
        """The WAV bytes of chunk *key*, checked complete (see :meth:`read_many`)."""
        return self.read_many(engine, [key])[key]

    def read_many(self, engine: str, keys: list[str]) -> dict[str, bytes]:
        """The WAV bytes of several chunks, fetched concurrently where the store allows.

        Each one is checked against the data length its WAV header declares: a
        truncated object (a crash on a store without atomic writes) is deleted
        and reported, so a rerun synthesises it again instead of trusting it.
        """
        fs, _ = self.fs_and_root
        paths = {self.path(engine, k): k for k in keys}
        action = f"read {len(keys)} chunk(s)"
        if len(paths) == 1:
            [(path, key)] = paths.items()
            found = {
                path: with_retries(
                    lambda: fs.cat_file(path),
                    url=self._url(engine, key[:2], f"{key}.wav"),
                    action="read the chunk",
                )
            }
        else:
            found = with_retries(
                lambda: fs.cat(list(paths), on_error="raise"), url=self.url, action=action
            )
        out = {}
        for path, data in found.items():
            key = paths[path]
            if not wav_complete(data):
                with_retries(
                    lambda path=path: fs.rm_file(path),
                    url=self.url,
                    action="delete a damaged chunk",
                )
                raise StorageError(
                    f"{self._url(engine, key[:2], key + '.wav')}: "
                    f"chunk is incomplete ({len(data)} bytes); "
                    "it was deleted: run the conversion again to synthesise it"
                )
            out[key] = data
        return out

    def encoded_path(self, key: str) -> str:
        """Where a book's encoded audio (AAC, see :func:`encoded_audio_key`) is kept."""
        _, root = self.fs_and_root
        return join(root, ENCODED, key[:2], f"{key}.m4a")

    def get_encoded(self, key: str, local_path: str) -> bool:
        """Copy the encoded audio *key* to *local_path*; ``False`` if the store has none."""
        fs, _ = self.fs_and_root
        path = self.encoded_path(key)

        def fetch() -> bool:
            try:
                fs.get_file(path, local_path)
                return True
            except FileNotFoundError:
                return False

        return with_retries(
            fetch, url=self._url(ENCODED, key[:2], f"{key}.m4a"), action="read the encoded audio"
        )

    def put_encoded(self, key: str, local_path: str) -> None:
        """Keep a book's encoded audio (one PUT / temp+rename: complete or absent)."""
        from .fs import publish_copy

        fs, _ = self.fs_and_root
        with_retries(
            lambda: publish_copy(fs, local_path, self.encoded_path(key)),
            url=self._url(ENCODED, key[:2], f"{key}.m4a"),
            action="write the encoded audio",
        )

    def voice_path(self, engine: str, name: str) -> str:
        """Where *engine* keeps a computed voice (e.g. XTTS speaker conditioning)."""
        _, root = self.fs_and_root
        return join(root, engine, "voices", name)

    def read_voice(self, engine: str, name: str) -> bytes | None:
        """The stored voice *name* of *engine*, or ``None`` if not stored yet."""
        fs, _ = self.fs_and_root
        path = self.voice_path(engine, name)

        def read():
            try:
                return fs.cat_file(path)
            except FileNotFoundError:
                return None

        return with_retries(read, url=self._url(engine, "voices", name), action="read the voice")

    def write_voice(self, engine: str, name: str, data: bytes) -> None:
        """Store a computed voice (atomically), for every worker and later runs."""
        fs, _ = self.fs_and_root
        path = self.voice_path(engine, name)
        with_retries(
            lambda: write_bytes_atomic(fs, path, data),
            url=self._url(engine, "voices", name),
            action="write the voice",
        )
