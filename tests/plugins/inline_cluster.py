"""A third-party cluster backend, registered through the ``ebook2audio_dask.clusters`` entry points.

One in-process worker (threads, no nanny) that advertises the synthesize
resources: enough to run a small graph, and cheap to start.
"""

from __future__ import annotations

from distributed import LocalCluster

from ebook2audio_dask.cluster import cluster_client

#: Requests this backend was started with (the tests look).
STARTED: list = []


class InlineBackend:
    """``start`` returns a client of a one-worker in-process cluster."""

    name = "inline"

    def start(self, request):
        STARTED.append(request)
        cluster = LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=False,
            dashboard_address=":0",
            resources={"GPU": 1},
        )
        return cluster_client(cluster, adapt=request.adapt)
