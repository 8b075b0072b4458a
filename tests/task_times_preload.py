"""Scheduler preload for tests: when and where each task really computed.

Loaded into a scheduler through ``DASK_DISTRIBUTED__SCHEDULER__PRELOAD`` (so
it reaches the embedded cluster a CLI subprocess starts), it appends one JSON
line per finished task to ``$E2A_TEST_TASK_TIMES``: the key, the worker, the
compute start and stop the worker itself measured (the ``startstops`` that
distributed's task stream shows) and the worker's threads and resources.
"""

from __future__ import annotations

import json
import os

from distributed.diagnostics.plugin import SchedulerPlugin


class TaskTimes(SchedulerPlugin):
    """Appends ``{"key", "worker", "start", "stop", "nthreads", "resources"}`` per computed task."""

    name = "test-task-times"

    def __init__(self, scheduler, path: str):
        self.scheduler = scheduler
        self.path = path

    def transition(self, key, start, finish, *args, **kwargs):
        if start != "processing" or finish != "memory":
            return
        worker = kwargs.get("worker")
        ws = self.scheduler.workers.get(worker)
        for span in kwargs.get("startstops") or ():
            if span.get("action") != "compute":
                continue
            record = {
                "key": str(key),
                "worker": worker,
                "start": span["start"],
                "stop": span["stop"],
                "nthreads": ws.nthreads if ws else None,
                "resources": dict(ws.resources) if ws else None,
            }
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")


def dask_setup(scheduler) -> None:
    scheduler.add_plugin(TaskTimes(scheduler, os.environ["E2A_TEST_TASK_TIMES"]))
