"""The embedded default cluster and connecting to an existing one."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import dask
from dask.utils import parse_bytes
from distributed import Client, LocalCluster

from .. import config
from ..errors import UsageError, one_line
from ..logs import get_logger
from .adaptive import SynthesisAdaptive
from .gpus import GPULocalCluster, ensure_engine_teardown, parse_gpus
from .security import client_security, embedded_security

__all__ = ["client_for", "default_n_workers", "local_cluster"]

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
        gpus = config.get("cluster.gpus", "auto")
    gpu_list = parse_gpus(gpus)
    slots = _slots_per_gpu(slots_per_gpu)
    n = (
        n_workers
        if n_workers is not None
        else (config.get("cluster.n-workers", None) or default_n_workers(engine_threads))
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
        dashboard_address = config.get("cluster.dashboard-address", None)
    # Task failures are reported per book by the client; the workers' own
    # "Compute Failed" tracebacks are noise unless debugging.
    debugging = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    kwargs.setdefault("silence_logs", logging.INFO if debugging else logging.CRITICAL)
    if memory_limit == "default":
        memory_limit = config.get("cluster.memory-limit", "auto")
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
    wanted = config.get("cluster.slots-per-gpu", 1) if value is None else value
    try:
        slots = int(str(wanted).strip())
    except ValueError:
        slots = 0
    if slots < 1:
        raise UsageError(f"invalid slots per GPU {wanted!r}: use a whole number of at least 1")
    return slots


@contextlib.contextmanager
def client_for(
    client: Client | None = None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    engine_threads: int | None = None,
    *,
    gpus: str | list[str] | None = "default",
    adapt: tuple[int, int] | None = None,
    slurm: bool | dict | None = None,
    security=None,
    tls: bool | None = None,
    memory_limit: str | float | None = "default",
    slots_per_gpu: int | None = None,
) -> Iterator[Client]:
    """Yield a client: the one given, one connected to *scheduler*, or an embedded cluster's.

    With *slurm* (True, or a dict of ``ebook2audio.slurm`` overrides) the
    workers are SLURM jobs (:func:`~.slurm.slurm_cluster`), ``slurm.jobs`` of
    them unless *adapt* is given.  *adapt* ``(min, max)`` makes the embedded
    or SLURM cluster adaptive (:class:`~.adaptive.SynthesisAdaptive`).
    *security* (a :class:`distributed.security.Security`; default from
    ``ebook2audio.tls.*``) is used to reach *scheduler*; *tls* turns on TLS
    inside the embedded cluster; *memory_limit* is each embedded worker's
    Dask ``memory_limit`` (default ``ebook2audio.cluster.memory-limit``);
    *slots_per_gpu* the synthesize tasks each embedded GPU worker runs at
    once (default ``ebook2audio.cluster.slots-per-gpu``; on an existing
    cluster start GPU workers with ``--resources GPU=N --nthreads N``).
    Clients and clusters created here are closed on exit; a given *client* is
    not.  Every worker gets the :class:`~.gpus.EngineTeardown` plugin (once),
    so loaded models (and their GPU memory) are released when a worker stops.
    """
    if client is not None:
        ensure_engine_teardown(client)
        yield client
        return
    if scheduler:
        security = security or client_security()
        try:
            c = Client(
                scheduler, security=security, timeout=config.get("cluster.connect-timeout", 30)
            )
        except (OSError, TimeoutError, ValueError, TypeError) as exc:
            hint = (
                " (a tls:// scheduler needs --tls-ca-file and --tls-cert)"
                if security is None
                else ""
            )
            raise UsageError(
                f"cannot connect to scheduler {scheduler}: {one_line(exc)}{hint}"
            ) from exc
        with c:
            ensure_engine_teardown(c)
            yield c
        return
    if slurm:
        from .slurm import slurm_cluster

        cluster = slurm_cluster(**(slurm if isinstance(slurm, dict) else {}))
        if not adapt:
            cluster.scale(jobs=int(config.get("slurm.jobs", 2)))
    elif adapt:
        cluster = local_cluster(
            0, engine_threads=engine_threads, gpus="none", tls=tls, memory_limit=memory_limit
        )
    else:
        cluster = local_cluster(
            n_workers,
            engine_threads=engine_threads,
            gpus=gpus,
            tls=tls,
            memory_limit=memory_limit,
            slots_per_gpu=slots_per_gpu,
        )
    if adapt:
        cluster.adapt(minimum=adapt[0], maximum=adapt[1], Adaptive=SynthesisAdaptive)
    with cluster, Client(cluster) as c:
        ensure_engine_teardown(c)
        yield c
