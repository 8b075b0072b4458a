"""SLURM through dask-jobqueue: GPU jobs, each one Dask worker tagged with the synthesize resources.

Each SLURM job runs **one** worker process with ``--gres=gpu:N`` (SLURM sets
its ``CUDA_VISIBLE_DEVICES``) and ``--resources GPU=1``-style tags (from
``ebook2audio.synthesize.resources``), so synthesize tasks land only there.
Workers retire themselves ``slurm.lifetime-margin`` before the job's walltime
(``--lifetime``, staggered so they do not all leave at once); with
``adapt()`` the cluster then starts fresh jobs for the remaining work, and the
chunk store means nothing already spoken is lost.  Settings live in the
``ebook2audio.slurm`` config section (a profile), every one overridable by
argument.

Two ways to run it:

* from the login node or a notebook (the scheduler runs in this process and
  submits worker jobs): :func:`slurm_cluster`, or ``ebook2audio convert
  --slurm --adapt 0:8 ...``;
* the whole thing as one batch job (``sbatch`` with several tasks): use
  ``dask_jobqueue.slurm.SLURMRunner``, see ``docs/deployment/slurm.md``.
"""

from __future__ import annotations

import sys
from typing import Any

from dask.utils import parse_timedelta

from .. import config
from ..logs import get_logger
from .backends import ClusterRequest, cluster_client

__all__ = ["SlurmBackend", "slurm_cluster", "slurm_job_script"]

logger = get_logger(__name__)


def _slurm_to_seconds(walltime: str) -> float:
    """``"02:00:00"``, ``"1-00:00:00"``, ``"90"`` (minutes) → seconds."""
    days = 0
    if "-" in walltime:
        d, walltime = walltime.split("-", 1)
        days = int(d)
    parts = [int(p) for p in walltime.split(":")]
    if len(parts) == 1:
        h, m, s = 0, parts[0], 0
    elif len(parts) == 2:
        h, m, s = 0, parts[0], parts[1]
    else:
        h, m, s = parts[-3:]
    return days * 86400 + h * 3600 + m * 60 + s


def _options(overrides: dict[str, Any]) -> dict[str, Any]:
    """The ``ebook2audio.slurm`` profile (the YAML is the default of each key) + *overrides*."""
    opts = dict(config.get("slurm"))
    opts.update({k.replace("_", "-"): v for k, v in overrides.items() if v is not None})
    return opts


def _job_kwargs(opts: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :class:`dask_jobqueue.SLURMCluster` from the profile."""
    resources = dict(config.get("synthesize.resources") or {})
    gpus = int(opts["gpus-per-job"] or 0)
    directives = [f"--gres={opts['gres-type']}:{gpus}"] if gpus else []
    directives += list(opts["job-extra"] or [])
    walltime = str(opts["walltime"])
    worker_args = []
    if resources:
        worker_args += ["--resources", ",".join(f"{k}={v:g}" for k, v in resources.items())]
    margin = parse_timedelta(opts["lifetime-margin"] or 0)
    wall_s = _slurm_to_seconds(walltime)
    if margin and wall_s > margin:
        stagger = parse_timedelta(opts["lifetime-stagger"] or 0)
        lifetime = max(60.0, wall_s - margin - stagger)
        worker_args += ["--lifetime", f"{int(lifetime)}s"]
        if stagger:
            worker_args += ["--lifetime-stagger", f"{int(stagger)}s"]
    kwargs: dict[str, Any] = {
        "cores": int(opts["cores"]),
        "processes": 1,  # one worker per job, so one GPU per worker
        "memory": str(opts["memory"]),
        "walltime": walltime,
        "queue": opts["partition"],
        "account": opts["account"],
        "job_extra_directives": directives,
        "worker_extra_args": worker_args,
        "job_script_prologue": list(opts["prologue"] or []),
        "python": opts["python"] or sys.executable,
        "log_directory": opts["log-directory"],
        "local_directory": opts["local-directory"],
        "interface": opts["interface"],
        "scheduler_options": {
            # off (null) for the embedded cluster, but a SLURM scheduler always has one
            "dashboard_address": config.get("cluster.dashboard-address") or ":0",
            **({"host": opts["scheduler-host"]} if opts["scheduler-host"] else {}),
        },
    }
    return {k: v for k, v in kwargs.items() if v not in (None, [], "")}


def slurm_cluster(**overrides: Any):
    """A :class:`dask_jobqueue.SLURMCluster` for speech synthesis on GPU jobs.

    Parameters
    ----------
    **overrides
        Any key of the ``ebook2audio.slurm`` config section (``partition``,
        ``account``, ``cores``, ``memory``, ``walltime``, ``gpus_per_job``,
        ``gres_type``, ``job_extra``, ``prologue``, ``lifetime_margin``,
        ``lifetime_stagger``, ``interface``, ``scheduler_host``, ``python``,
        ``log_directory``, ``local_directory``); ``_`` or ``-`` both work.

    Returns
    -------
    dask_jobqueue.SLURMCluster
        Not yet scaled: call ``.scale(jobs)`` or ``.adapt(...)`` (use
        :class:`~.adaptive.SynthesisAdaptive`, as ``convert --slurm`` does).

    Examples
    --------
    >>> from ebook2audio_dask.cluster import slurm_cluster, SynthesisAdaptive
    >>> cluster = slurm_cluster(partition="gpu", walltime="04:00:00")  # doctest: +SKIP
    >>> cluster.adapt(minimum=0, maximum=8, Adaptive=SynthesisAdaptive)  # doctest: +SKIP
    """
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        from ..errors import UsageError

        raise UsageError(
            "SLURM needs dask-jobqueue: pip install 'ebook2audio_dask[slurm]'"
        ) from None
    kwargs = _job_kwargs(_options(overrides))
    logger.info("SLURM cluster: %s", kwargs)
    return SLURMCluster(**kwargs)


def slurm_job_script(**overrides: Any) -> str:
    """The ``sbatch`` script each worker job would be submitted with (for review)."""
    from dask_jobqueue.slurm import SLURMJob

    kwargs = _job_kwargs(_options(overrides))
    kwargs.pop("scheduler_options", None)
    return SLURMJob(scheduler="tcp://SCHEDULER:8786", name="dask-worker", **kwargs).job_script()


class SlurmBackend:
    """The ``slurm`` cluster backend: :func:`slurm_cluster` with ``request.slurm`` overrides.

    Without ``request.adapt`` it starts ``ebook2audio.slurm.jobs`` jobs; with
    it the cluster grows and shrinks with the queued synthesis.
    """

    name = "slurm"

    def start(self, request: ClusterRequest):
        """Start the SLURM cluster for *request*; return ``(client, close)``."""
        cluster = slurm_cluster(**(request.slurm or {}))
        if not request.adapt:
            try:
                cluster.scale(jobs=int(config.get("slurm.jobs")))
            except BaseException:
                cluster.close()
                raise
        return cluster_client(cluster, adapt=request.adapt)
