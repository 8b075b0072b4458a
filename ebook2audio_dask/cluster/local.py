"""The embedded default cluster (the ``local`` cluster backend)."""

from __future__ import annotations

import logging
import os

import dask
from dask.utils import parse_bytes
from distributed import LocalCluster

from .. import config
from ..errors import UsageError
from ..logs import get_logger
from .backends import ClusterRequest, cluster_client
from .gpus import GPULocalCluster, parse_gpus
from .security import embedded_security

__all__ = ["LocalBackend", "default_n_workers", "local_cluster"]

logger = get_logger(__name__)

#: Worker preload that takes embedded workers out of the terminal's process group.
DETACH_PRELOAD = "ebook2audio_dask.cluster.detach"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def default_n_workers(engine_threads: int | None = None) -> int:
    """Worker processes for this machine: ``cores // engine threads`` (at least 1).

    Keeps ``engine threads × workers ≤ cores``, so engines never fight for cores.
    """
    threads = int(config.get("synthesize.engine-threads", override=engine_threads))
    return max(1, _cores() // max(1, threads))


def local_cluster(
    n_workers: int | None = None,
    *,
    engine_threads: int | None = None,
    threads_per_worker: int | None = None,
    resources: dict[str, float] | None = None,
    dashboard_address: str | None = "default",
    gpus: str | list[str] | None = "default",
    tls: bool | None = None,
    memory_limit: str | float | None = "default",
    slots_per_gpu: int | None = None,
    **kwargs,
) -> LocalCluster:
    """Start the embedded cluster: worker processes on 127.0.0.1 only.

    Each worker advertises the synthesize resources (default ``{"GPU": 1}``),
    so exactly one synthesize task runs per worker at a time, and the engine
    it loads stays resident for the next task.  On a machine with GPUs
    (``cluster.gpus``, default ``auto``) there is one worker per GPU, each
    seeing only its own GPU through ``CUDA_VISIBLE_DEVICES`` and running
    *slots_per_gpu* synthesize tasks at a time.

    Parameters
    ----------
    n_workers : int, optional
        Worker processes; default :func:`default_n_workers`.
    engine_threads : int, optional
        Threads per engine (``synthesize.engine-threads``).
    threads_per_worker : int, optional
        Dask threads per worker (``cluster.threads-per-worker``).
    resources : dict, optional
        Resources each worker advertises (``synthesize.resources``).
    dashboard_address : str or None
        ``":0"`` for any free port, ``None`` for no dashboard; default from config.
    gpus : str or list of str, optional
        ``"auto"``, ``"none"`` or device ids (``"0,1"``); default ``cluster.gpus``.
        With GPUs, *n_workers* is the number of GPUs.
    tls : bool, optional
        ``tls://`` between client, scheduler and workers with a throw-away
        certificate (default ``ebook2audio.tls.embedded``).
    memory_limit : str or float, optional
        Dask's per-worker ``memory_limit`` (``"4GiB"``, ``"auto"``: the
        machine's memory divided among the workers, ``0``: none); default
        ``ebook2audio.cluster.memory-limit``.  A worker past 95 % of it is
        restarted by its nanny (the task's chunks written so far are kept).
    slots_per_gpu : int, optional
        Synthesize tasks each GPU worker runs at once, sharing its engines
        (see :class:`~.gpus.GPULocalCluster`); default
        ``ebook2audio.cluster.slots-per-gpu`` (1).  Ignored without GPUs.
    **kwargs
        Passed to :class:`distributed.LocalCluster`.
    """
    if gpus == "default":
        gpus = config.get("cluster.gpus")
    gpu_list = parse_gpus(gpus)
    slots = _slots_per_gpu(slots_per_gpu)
    n = (
        n_workers
        if n_workers is not None
        else (config.get("cluster.n-workers") or default_n_workers(engine_threads))
    )
    if gpu_list:
        n = len(gpu_list)
    threads = int(config.get("synthesize.engine-threads", override=engine_threads))
    if int(n) * threads > _cores():
        logger.warning(
            "%d workers x %d engine threads > %d cores: engines will compete for cores",
            int(n),
            threads,
            _cores(),
        )
    if dashboard_address == "default":
        dashboard_address = config.get("cluster.dashboard-address")
    # Task failures are reported per book by the client; the workers' own
    # "Compute Failed" tracebacks are noise unless debugging.
    debugging = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    kwargs.setdefault("silence_logs", logging.INFO if debugging else logging.CRITICAL)
    if memory_limit == "default":
        memory_limit = config.get("cluster.memory-limit")
    if isinstance(memory_limit, str) and memory_limit.strip().lower() not in (
        "auto",
        "0",
        "none",
        "",
    ):
        try:
            parse_bytes(memory_limit)
        except (ValueError, TypeError) as exc:
            raise UsageError(
                f"invalid memory limit {memory_limit!r}: use a size such as 4GiB, auto or 0"
            ) from exc
    if isinstance(memory_limit, str) and memory_limit.strip().lower() in ("none", ""):
        memory_limit = 0
    kwargs.setdefault("memory_limit", memory_limit if memory_limit is not None else 0)
    security = embedded_security(tls)
    if security is not None:
        kwargs.update(security=security, protocol="tls://")
    # The client fails a book that waits too long for the resources (a clear
    # error, see pipeline.graph); the scheduler's own timeout is a later backstop.
    # Only the client hears Ctrl-C: it cancels, closes the cluster and says what is kept.
    kwargs["preload"] = [*(kwargs.get("preload") or ()), DETACH_PRELOAD]
    wait = float(config.get("cluster.no-workers-timeout") or 0)
    with dask.config.set(
        {"distributed.scheduler.no-workers-timeout": f"{wait + 60:g}s" if wait > 0 else None}
    ):
        if gpu_list:
            logger.info(
                "one worker per GPU: %s (%d synthesize slot(s) each)", ", ".join(gpu_list), slots
            )
            return GPULocalCluster(
                gpu_list,
                slots_per_gpu=slots,
                threads_per_worker=int(
                    config.get("cluster.threads-per-worker", override=threads_per_worker)
                ),
                processes=True,
                host="127.0.0.1",
                resources=dict(resources or config.get("synthesize.resources") or {}),
                dashboard_address=dashboard_address,
                **kwargs,
            )
        return LocalCluster(
            n_workers=int(n),
            threads_per_worker=int(
                config.get("cluster.threads-per-worker", override=threads_per_worker)
            ),
            processes=True,
            host="127.0.0.1",
            resources=dict(resources or config.get("synthesize.resources") or {}),
            dashboard_address=dashboard_address,
            **kwargs,
        )


def _slots_per_gpu(value: int | None) -> int:
    """*value*, else ``cluster.slots-per-gpu``: a whole number of at least 1."""
    wanted = config.get("cluster.slots-per-gpu") if value is None else value
    try:
        slots = int(str(wanted).strip())
    except ValueError:
        slots = 0
    if slots < 1:
        raise UsageError(f"invalid slots per GPU {wanted!r}: use a whole number of at least 1")
    return slots


class LocalBackend:
    """The ``local`` cluster backend: the embedded cluster of :func:`local_cluster`.

    With ``request.adapt`` it starts with no workers and without GPUs, and
    grows and shrinks with the queued synthesis (:class:`.SynthesisAdaptive`).
    """

    name = "local"

    def start(self, request: ClusterRequest):
        """Start the embedded cluster for *request*; return ``(client, close)``."""
        if request.adapt:
            cluster = local_cluster(
                0,
                engine_threads=request.engine_threads,
                gpus="none",
                tls=request.tls,
                memory_limit=request.memory_limit,
            )
        else:
            cluster = local_cluster(
                request.n_workers,
                engine_threads=request.engine_threads,
                gpus=request.gpus,
                tls=request.tls,
                memory_limit=request.memory_limit,
                slots_per_gpu=request.slots_per_gpu,
            )
        return cluster_client(cluster, adapt=request.adapt)
