"""Worker preload of the embedded cluster: leave the terminal's process group.

Ctrl-C in a terminal sends SIGINT to every process of its foreground process
group.  The embedded cluster's worker processes (and the ffmpeg, Calibre...
processes they start) would each die of it mid-write, printing tracebacks,
while the client is the one that should stop the run in order: cancel the
books' tasks, close the cluster, say what is kept.  Each embedded worker
therefore starts a session of its own (:func:`os.setsid`) when it starts, so
only the client hears Ctrl-C.

The workers still stop with the client: Dask ends a worker process at once
when its parent (the client process, which runs the nannies) goes away.
"""

from __future__ import annotations

import os

from ..logs import get_logger

logger = get_logger(__name__)

__all__ = ["dask_setup", "detach_from_terminal"]


def detach_from_terminal() -> bool:
    """Move this process into a new session (no controlling terminal); True when it moved."""
    try:
        os.setsid()
    except (AttributeError, OSError):  # Windows, or already a process group leader
        logger.debug("this worker stays in its process group", exc_info=True)
        return False
    return True


def dask_setup(worker=None) -> None:
    """Dask preload hook (``preload=["ebook2audio_dask.cluster.detach"]``)."""
    detach_from_terminal()
