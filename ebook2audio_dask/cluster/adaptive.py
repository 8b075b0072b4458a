"""Adaptive scaling driven by queued synthesis, not only by Dask's CPU estimate.

:class:`distributed.deploy.Adaptive` asks the scheduler for
``adaptive_target()``, which ignores resource restrictions and estimates work
from task durations it has seen: until a synthesize task has finished, each
counts as a 0.5 s task, so a queue of minute-long GPU batches asks for one
worker.  :class:`SynthesisAdaptive` also counts the synthesize work waiting
for a worker with the synthesize resources (the tasks that carry resource
restrictions): one worker per such task, up to ``maximum``, and it keeps
every worker that is running something else (a merge).
"""

from __future__ import annotations

import math

from distributed.deploy.adaptive import Adaptive

__all__ = ["SynthesisAdaptive", "parse_adapt", "synthesis_target"]

_WAITING = ("released", "waiting", "no-worker", "queued", "processing")


def synthesis_target(scheduler, slots_per_worker: int = 1) -> int:
    """Workers wanted for the resource-restricted (synthesize) work on *scheduler*.

    Parameters
    ----------
    scheduler : distributed.Scheduler
        The in-process scheduler.
    slots_per_worker : int
        Synthesize tasks one worker runs at once (its resource amount divided
        by what a task asks; 1 by default).

    Returns
    -------
    int
        ``ceil(synthesize tasks not finished / slots)``, at least the number
        of workers busy with other tasks (merges, parses).
    """
    synth = 0
    busy = set()
    for ts in scheduler.tasks.values():
        if ts.resource_restrictions and ts.state in _WAITING and ts.who_wants:
            synth += 1
        elif ts.state == "processing" and ts.processing_on is not None:
            busy.add(ts.processing_on.address)
    return max(math.ceil(synth / max(1, slots_per_worker)), len(busy))


class SynthesisAdaptive(Adaptive):
    """:class:`distributed.deploy.Adaptive` that scales on queued synthesize work.

    The target is the larger of Dask's own estimate and
    :func:`synthesis_target`, within ``minimum``/``maximum``.  Works for
    clusters whose scheduler runs in this process (``LocalCluster``,
    dask-jobqueue clusters); otherwise it falls back to Dask's estimate.
    """

    async def target(self) -> int:
        base = await super().target()
        scheduler = getattr(self.cluster, "scheduler", None)
        if scheduler is None or not hasattr(scheduler, "tasks"):
            return base
        return max(base, synthesis_target(scheduler))


def parse_adapt(text: str | None) -> tuple[int, int] | None:
    """``"0:8"`` → ``(0, 8)``; ``"4"`` → ``(0, 4)``; ``None``/empty → ``None``.

    Raises
    ------
    ValueError
        Not ``MIN:MAX`` with ``0 <= MIN <= MAX`` and ``MAX >= 1``.
    """
    if not text:
        return None
    lo, sep, hi = str(text).partition(":")
    try:
        minimum, maximum = (int(lo), int(hi)) if sep else (0, int(lo))
    except ValueError:
        raise ValueError(f"bad --adapt {text!r}: use MIN:MAX, e.g. 0:8") from None
    if minimum < 0 or maximum < max(1, minimum):
        raise ValueError(f"bad --adapt {text!r}: need 0 <= MIN <= MAX and MAX >= 1")
    return minimum, maximum
