"""Storage: fsspec access and the content-addressed chunk store."""

from .chunkstore import ChunkStore
from .fs import get_fs, join, open_url, publish_file, stem_of, write_bytes_atomic

__all__ = [
    "ChunkStore",
    "get_fs",
    "join",
    "open_url",
    "publish_file",
    "stem_of",
    "write_bytes_atomic",
]
