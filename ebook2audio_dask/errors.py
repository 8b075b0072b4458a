"""Exceptions and the CLI exit codes they map to.

Every error a user can cause carries a one-line message that names the file
and the problem.  The CLI prints ``str(error)`` (no traceback unless
``--debug``) and exits with :attr:`Ebook2AudioError.exit_code`.
"""

from __future__ import annotations

import re

__all__ = [
    "EXIT_BOOK_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "MESSAGE_LIMIT",
    "BookError",
    "Ebook2AudioError",
    "EngineError",
    "Interrupted",
    "StorageError",
    "UsageError",
    "one_line",
    "terminal_safe",
]

#: Every book converted.
EXIT_OK = 0
#: At least one book failed (the others still finished).
EXIT_BOOK_FAILED = 1
#: Bad command line or configuration.
EXIT_USAGE = 2
#: Interrupted (Ctrl-C): what was synthesised is kept in the chunk store.
EXIT_INTERRUPTED = 130

#: Longest problem text of a one-line message, in characters (paths are not cut).
MESSAGE_LIMIT = 200

#: C0/C1 control characters, DEL, and the Unicode characters that reorder or
#: hide text on a terminal (bidi embeddings/overrides/isolates, LRM/RLM/ALM,
#: line and paragraph separators).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch) or (
        f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"
    )


def terminal_safe(text: object) -> str:
    """*text* with control and bidi-override characters escaped, for a terminal or log line.

    Every string that comes from a book (titles, member names) or a path is
    passed through this before it is printed or logged: ``ESC`` becomes
    ``\\x1b``, a newline ``\\n``, U+202E ``\\u202e``.  Other text, any
    script, is unchanged.  The CLI applies it to everything it prints and to
    every log line (:func:`ebook2audio_dask.cli.main.echo`).
    """
    return _UNSAFE.sub(_escape, str(text))


def one_line(text: object, limit: int | None = MESSAGE_LIMIT) -> str:
    """*text* as one safe line: whitespace runs collapsed, control characters
    escaped (:func:`terminal_safe`), cut to *limit* characters with "…".

    The one formatter of error text in this library (engine errors, storage
    errors, book errors, the CLI's own messages).  An exception without a
    message gives its type's name.
    """
    line = terminal_safe(" ".join(str(text).split()))
    if not line and isinstance(text, BaseException):
        line = type(text).__name__
    if limit is not None and len(line) > limit:
        line = line[: max(1, limit - 1)].rstrip() + "…"
    return line


class Ebook2AudioError(Exception):
    """Base class of every error this library raises on purpose.

    Its message is always one safe line (:func:`one_line`); a message without
    a book's path is cut at ``2 * MESSAGE_LIMIT`` characters (it usually holds
    another path or URL).
    """

    exit_code = EXIT_BOOK_FAILED

    def __init__(self, *args):
        if len(args) == 1 and isinstance(args[0], str):
            args = (one_line(args[0], 2 * MESSAGE_LIMIT),)
        super().__init__(*args)


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
        # always one line; the problem may hold a path or URL of its own (a dead-letter
        # file, an output), so it gets the longer limit; inner errors are cut where quoted
        self.problem = one_line(problem, 2 * MESSAGE_LIMIT)
        # the path as it is (made safe, never cut or collapsed), then the one-line problem
        Exception.__init__(self, f"{terminal_safe(self.source)}: {self.problem}")

    def __reduce__(self):  # keep (source, problem) across pickling to/from workers
        return (type(self), (self.source, self.problem))


class UsageError(Ebook2AudioError):
    """The request itself is wrong (unknown engine, bad chapter range...)."""

    exit_code = EXIT_USAGE


class EngineError(Ebook2AudioError):
    """A speech engine is missing, cannot load, or failed to speak."""


class StorageError(Ebook2AudioError):
    """Reading or writing a path or URL failed."""


class Interrupted(Ebook2AudioError):
    """The run was interrupted (Ctrl-C / ``KeyboardInterrupt``) and stopped in order.

    Raised by :func:`~ebook2audio_dask.convert` in place of the
    ``KeyboardInterrupt``: the books' tasks were cancelled, and the message
    says how many of their chunks are kept in the chunk store (the same
    command resumes from them).  Exit code 130, as for any program a
    terminal's Ctrl-C stops.
    """

    exit_code = EXIT_INTERRUPTED
