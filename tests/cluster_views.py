"""What a cluster is doing, read on the scheduler and the workers: a stalled run's evidence.

Used by ``tests/test_faults.py`` and ``benchmarks/bench_kill_loop.py``.  The
functions travel to the cluster by value: its processes cannot import this
module.
"""

from __future__ import annotations

import os
import sys

import cloudpickle

cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: What :func:`scheduler_view` says of each task, in order.
TASK_FIELDS = ("state", "worker", "suspicious", "resources", "waiting on", "wanted by")


def scheduler_view(dask_scheduler=None) -> dict:
    """Runs on the scheduler: every task's :data:`TASK_FIELDS`, every worker's load, the queues
    and the clients."""
    return {
        "tasks": {
            str(k): [
                ts.state,
                ts.processing_on.name if ts.processing_on else None,
                ts.suspicious,
                dict(ts.resource_restrictions or {}),
                len(ts.waiting_on or ()),
                len(ts.who_wants or ()),
            ]
            for k, ts in dask_scheduler.tasks.items()
        },
        "workers": {
            ws.address: {
                "name": ws.name,
                "status": str(ws.status),
                "used": dict(ws.used_resources),
                "resources": dict(ws.resources),
                "processing": len(ws.processing),
                "executing": len(ws.executing),
                "long_running": len(ws.long_running),
            }
            for ws in dask_scheduler.workers.values()
        },
        "unrunnable": len(dask_scheduler.unrunnable),
        "queued": len(dask_scheduler.queued),
        "clients": sorted(str(c) for c in dask_scheduler.clients),
    }


def worker_view(dask_worker=None) -> dict:
    """Runs on a worker: its process id, its tasks' states, its thread count and how many
    tasks it executes."""
    return {
        "pid": os.getpid(),
        "tasks": {str(k): ts.state for k, ts in dask_worker.state.tasks.items()},
        "nthreads": dask_worker.state.nthreads,
        "executing": len(dask_worker.state.executing),
    }
