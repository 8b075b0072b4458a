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

from dataclasses import dataclass, field
from typing import Any

from ..audio.wav import WAV_HEADER_BYTES
from .fs import get_fs, join, write_bytes_atomic

__all__ = ["ChunkStore"]


@dataclass(frozen=True)
class ChunkStore:
    """A chunk store at *url*.

    Parameters
    ----------
    url : str
        Folder or prefix (``~/.cache/ebook2audio/chunks``, ``s3://bucket/chunks``).
    storage_options : tuple of (str, value) pairs
        fsspec options for *url*, as sorted pairs so the store stays hashable.
        Use :meth:`make` to pass a dict.
    """

    url: str
    storage_options: tuple[tuple[str, Any], ...] = field(default=(), repr=False)

    @classmethod
    def make(cls, url: str, storage_options: dict[str, Any] | None = None) -> "ChunkStore":
        return cls(url, tuple(sorted((storage_options or {}).items())))

    @property
    def fs_and_root(self):
        return get_fs(self.url, dict(self.storage_options))

    def path(self, engine: str, key: str) -> str:
        """Where the chunk *key* of *engine* lives in the store."""
        _, root = self.fs_and_root
        return join(root, engine, key[:2], f"{key}.wav")

    def list_sizes(self, engine: str) -> dict[str, int]:
        """Every complete chunk of *engine* in the store: ``{key: size in bytes}``.

        One recursive listing per call (not one request per chunk).  Files
        too small to hold a WAV header are ignored.
        """
        fs, root = self.fs_and_root
        base = join(root, engine)
        try:
            found = fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        sizes: dict[str, int] = {}
        for path, info in found.items():
            name = path.rsplit("/", 1)[-1]
            if not name.endswith(".wav") or name.startswith("."):
                continue
            size = int(info.get("size") or 0)
            if size >= WAV_HEADER_BYTES:
                sizes[name[:-4]] = size
        return sizes

    def write(self, engine: str, key: str, wav: bytes) -> None:
        """Store one chunk's WAV bytes (atomically)."""
        fs, _ = self.fs_and_root
        write_bytes_atomic(fs, self.path(engine, key), wav)

    def read(self, engine: str, key: str) -> bytes:
        """The WAV bytes of chunk *key*."""
        fs, _ = self.fs_and_root
        return fs.cat_file(self.path(engine, key))

    def voice_path(self, engine: str, name: str) -> str:
        """Where *engine* keeps a computed voice (e.g. XTTS speaker conditioning)."""
        _, root = self.fs_and_root
        return join(root, engine, "voices", name)

    def read_voice(self, engine: str, name: str) -> bytes | None:
        """The stored voice *name* of *engine*, or ``None`` if not stored yet."""
        fs, _ = self.fs_and_root
        try:
            return fs.cat_file(self.voice_path(engine, name))
        except FileNotFoundError:
            return None

    def write_voice(self, engine: str, name: str, data: bytes) -> None:
        """Store a computed voice (atomically), for every worker and later runs."""
        fs, _ = self.fs_and_root
        write_bytes_atomic(fs, self.voice_path(engine, name), data)
