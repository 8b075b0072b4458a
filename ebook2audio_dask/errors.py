"""Exceptions and the CLI exit codes they map to.

Every error a user can cause carries a one-line message that names the file
and the problem.  The CLI prints ``str(error)`` (no traceback unless
``--debug``) and exits with :attr:`Ebook2AudioError.exit_code`.
"""

from __future__ import annotations

__all__ = [
    "EXIT_OK",
    "EXIT_BOOK_FAILED",
    "EXIT_USAGE",
    "Ebook2AudioError",
    "BookError",
    "UsageError",
    "EngineError",
    "StorageError",
]

#: Every book converted.
EXIT_OK = 0
#: At least one book failed (the others still finished).
EXIT_BOOK_FAILED = 1
#: Bad command line or configuration.
EXIT_USAGE = 2


class Ebook2AudioError(Exception):
    """Base class of every error this library raises on purpose."""

    exit_code = EXIT_BOOK_FAILED


class BookError(Ebook2AudioError):
    """An input book cannot be read or converted.

    Parameters
    ----------
    source : str
        The path or URL of the book.
    problem : str
        What is wrong with it, in a few words.
    """

    def __init__(self, source: str, problem: str):
        self.source = str(source)
        self.problem = " ".join(str(problem).split())  # always one line
        super().__init__(f"{self.source}: {self.problem}")

    def __reduce__(self):  # keep (source, problem) across pickling to/from workers
        return (type(self), (self.source, self.problem))


class UsageError(Ebook2AudioError):
    """The request itself is wrong (unknown engine, bad chapter range...)."""

    exit_code = EXIT_USAGE


class EngineError(Ebook2AudioError):
    """A speech engine is missing, cannot load, or failed to speak."""


class StorageError(Ebook2AudioError):
    """Reading or writing a path or URL failed."""
