"""ebook2audio_dask: turn ebooks into chaptered M4B audiobooks on a Dask cluster.

>>> import ebook2audio_dask as e2a
>>> book = e2a.read_book("book.epub")              # doctest: +SKIP
>>> [c.title for c in book.chapters]               # doctest: +SKIP
>>> e2a.convert("book.epub", "out/")               # doctest: +SKIP

The graph ``parse → chunk → synthesize → merge`` runs on an embedded
:class:`distributed.LocalCluster` unless a ``client=`` or ``scheduler=`` is
given.  Lower-level pieces for notebooks: :func:`submit_book`,
:func:`run_jobs`, :class:`ConvertOptions`, :func:`local_cluster`.
"""

from . import config  # noqa: F401  (loads the ebook2audio.yaml defaults into dask.config)
from .cluster import client_for, local_cluster
from .engines import engine_names, get_engine_class
from .errors import BookError, Ebook2AudioError, EngineError, StorageError, UsageError
from .ingest import read_book
from .model import Book, Chapter, Cover
from .pipeline import BookJob, BookResult, ConvertOptions, convert, run_jobs, submit_book

__version__ = "0.1.0"

__all__ = [
    "Book",
    "BookError",
    "BookJob",
    "BookResult",
    "Chapter",
    "ConvertOptions",
    "Cover",
    "Ebook2AudioError",
    "EngineError",
    "StorageError",
    "UsageError",
    "client_for",
    "convert",
    "engine_names",
    "get_engine_class",
    "local_cluster",
    "read_book",
    "run_jobs",
    "submit_book",
]
