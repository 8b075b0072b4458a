"""The package's loggers: every log line is made terminal-safe where it is made.

Log messages quote book titles, file and archive member names, and errors
raised while reading them: text that anyone may have written.  Each module
gets its logger from :func:`get_logger`, which escapes control and
bidi-override characters in the final message
(:func:`~ebook2audio_dask.errors.terminal_safe`), in whatever process logs it
(the CLI, a worker of the embedded cluster, a worker on another machine), and
whatever handler prints it.  Tracebacks are left as they are.
"""

from __future__ import annotations

import logging

from .errors import terminal_safe

__all__ = ["get_logger"]


class _SafeMessages(logging.Filter):
    """Replace a record's message by its terminal-safe form (when they differ)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        safe = terminal_safe(message)
        if safe != message:
            record.msg, record.args = safe, ()
        return True


_SAFE = _SafeMessages()


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` whose records are made terminal-safe."""
    logger = logging.getLogger(name)
    if _SAFE not in logger.filters:
        logger.addFilter(_SAFE)
    return logger
