"""The tasks' view of Dask: which worker runs them, its scratch space, and whether
the client still wants them.

Everything here is asked of :mod:`distributed` lazily, so the tasks can also
be called directly (tests, notebooks): outside a worker the answers are
"local", the system's temporary folder and "not cancelled".
"""

from __future__ import annotations

from ..logs import get_logger

__all__ = ["killed_worker", "merge_cancelled", "scratch_dir", "worker_address"]

logger = get_logger(__name__)


def scratch_dir() -> str | None:
    """The worker's local directory, for a task's temporary files.

    Dask removes it, even after a SIGKILL, when the next worker starts on the
    machine.  ``None`` (the system's temporary folder) outside a worker.
    """
    try:
        from distributed import get_worker

        return get_worker().local_directory
    except (ValueError, AttributeError):
        return None


def worker_address() -> str:
    """The address of the worker running the task; ``"local"`` outside a worker."""
    try:
        from distributed import get_worker

        return get_worker().address
    except ValueError:  # not running inside a Dask worker (direct call, tests)
        return "local"


def killed_worker(exc: BaseException) -> bool:
    """True for Dask's ``KilledWorker``: the task's worker died ``allowed-failures`` + 1 times."""
    from distributed.scheduler import KilledWorker

    return isinstance(exc, KilledWorker)


def merge_cancelled(stop_event: str | None = None) -> bool:
    """True once the client no longer wants the running merge task.

    Two signals, either enough: the book's stop :class:`distributed.Event`
    named *stop_event* (set by the client when the book fails: explicit,
    whatever the worker's view of the task), and the worker's own state for
    this task.  Asked once, when the merge has staged its files (not polled).
    Always False outside a worker.
    """
    from distributed import Event, get_worker
    from distributed.worker import thread_state

    try:
        worker = get_worker()
    except ValueError:  # not on a worker
        return False
    if stop_event:
        try:
            if Event(stop_event).is_set():
                return True
        except Exception:  # the scheduler is going away: the task state below decides
            logger.debug("stop event %s unreadable", stop_event, exc_info=True)
    ts = worker.state.tasks.get(getattr(thread_state, "key", None))
    return ts is None or ts.state in ("cancelled", "released", "forgotten")
