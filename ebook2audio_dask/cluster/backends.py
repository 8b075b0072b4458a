"""The cluster seam: one small interface for every place the graph can run.

A *backend* has a ``name`` and a ``start(request)`` method that takes a
:class:`ClusterRequest` and returns ``(client, close)``: a connected
:class:`distributed.Client` and a function that closes what was started
(the client, and the cluster when the backend made one).
:func:`client_for` picks the backend, opens it, gives every worker the
:class:`~.gpus.EngineTeardown` plugin and closes it on exit.

Built in:

* ``local``: the embedded ``LocalCluster`` (one worker per GPU with GPUs),
  adaptive with ``request.adapt`` (:mod:`.local`);
* ``existing``: connect to ``request.scheduler`` (:mod:`.existing`);
* ``slurm``: dask-jobqueue SLURM jobs, adaptive with ``request.adapt``
  (:mod:`.slurm`).

``auto`` (``ebook2audio.cluster.backend``'s default) picks ``existing`` when
a scheduler address is given, ``slurm`` when SLURM options are, else
``local``.  Other backends come from the ``ebook2audio_dask.clusters``
entry-point group (or :func:`register_backend`)::

    [project.entry-points."ebook2audio_dask.clusters"]
    kubernetes = "mypackage.kube:KubeBackend"

where ``KubeBackend`` is a class (made with no arguments) or an object with
``name`` and ``start``; :func:`cluster_client` does the usual work for a
backend that starts its own cluster manager::

    class KubeBackend:
        name = "kubernetes"

        def start(self, request):
            from dask_kubernetes.operator import KubeCluster

            return cluster_client(KubeCluster(name="e2a"), adapt=request.adapt)
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

from distributed import Client

from .. import config, plugins
from ..errors import UsageError
from .adaptive import SynthesisAdaptive
from .gpus import ensure_engine_teardown

__all__ = [
    "ENTRY_POINT_GROUP",
    "ClusterBackend",
    "ClusterRequest",
    "backend_names",
    "client_for",
    "cluster_client",
    "get_backend",
    "register_backend",
    "resolve_backend",
    "unregister_backend",
]

#: Entry-point group of third-party cluster backends.
ENTRY_POINT_GROUP = "ebook2audio_dask.clusters"

# The built-in backends, as "module:attribute" (imported only when used).
_BUILTIN = {
    "local": "ebook2audio_dask.cluster.local:LocalBackend",
    "existing": "ebook2audio_dask.cluster.existing:ExistingBackend",
    "slurm": "ebook2audio_dask.cluster.slurm:SlurmBackend",
}
# Registered in this process with register_backend (win over entry points).
_REGISTERED: dict[str, Any] = {}


@dataclasses.dataclass(frozen=True)
class ClusterRequest:
    """What the caller asked of the cluster; each backend uses the fields that apply to it.

    Attributes
    ----------
    scheduler : str, optional
        Address of an existing scheduler (``existing``).
    n_workers : int, optional
        Embedded worker processes (``local``; default ``cluster.n-workers``).
    engine_threads : int, optional
        Threads per engine (``synthesize.engine-threads``).
    gpus : str or list of str, optional
        GPUs of the embedded cluster (``"default"``: ``cluster.gpus``).
    adapt : tuple of int, optional
        ``(minimum, maximum)`` workers: an adaptive cluster
        (:class:`~.adaptive.SynthesisAdaptive`), where the backend supports it.
    slurm : dict, optional
        Overrides of the ``ebook2audio.slurm`` profile (``slurm``).
    security : distributed.security.Security, optional
        Used to reach *scheduler* (default from ``ebook2audio.tls.*``).
    tls : bool, optional
        TLS inside the embedded cluster (default ``tls.embedded``).
    memory_limit : str or float, optional
        Each embedded worker's Dask ``memory_limit`` (``"default"``:
        ``cluster.memory-limit``).
    slots_per_gpu : int, optional
        Synthesize tasks each embedded GPU worker runs at once.
    """

    scheduler: str | None = None
    n_workers: int | None = None
    engine_threads: int | None = None
    gpus: str | list[str] | None = "default"
    adapt: tuple[int, int] | None = None
    slurm: dict | None = None
    security: Any = None
    tls: bool | None = None
    memory_limit: str | float | None = "default"
    slots_per_gpu: int | None = None


@runtime_checkable
class ClusterBackend(Protocol):
    """A place to run the graph: a name, and ``start`` that returns ``(client, close)``."""

    name: str

    def start(self, request: ClusterRequest) -> tuple[Client, Callable[[], None]]:
        """Start (or reach) a cluster for *request*; ``close()`` undoes what was started."""
        ...


def register_backend(backend: ClusterBackend) -> None:
    """Make *backend* available under ``backend.name`` in this process.

    Entry points (group ``ebook2audio_dask.clusters``) do the same for every
    process where the package providing them is installed.
    """
    if not isinstance(backend, ClusterBackend):
        raise TypeError(f"{backend!r} is not a cluster backend (needs name and start)")
    _REGISTERED[backend.name] = backend


def unregister_backend(name: str) -> None:
    """Forget a backend :func:`register_backend` added (entry points stay)."""
    _REGISTERED.pop(name, None)


def _entries() -> dict[str, Any]:
    return {**plugins.discover(ENTRY_POINT_GROUP, _BUILTIN), **_REGISTERED}


def backend_names() -> list[str]:
    """Names of every cluster backend: built in, from entry points, or registered."""
    return sorted(_entries())


def get_backend(name: str) -> ClusterBackend:
    """The backend registered as *name* (a class found there is made with no arguments).

    Raises
    ------
    UsageError
        No backend has that name.
    """
    try:
        entry = _entries()[name]
    except KeyError:
        known = ", ".join(["auto", *backend_names()])
        raise UsageError(f"unknown cluster backend {name!r} (known: {known})") from None
    if isinstance(entry, str):  # built in or an entry point: "module:attribute"
        entry = plugins.load(entry)
    return entry() if isinstance(entry, type) else entry


def resolve_backend(name: str | None, request: ClusterRequest) -> str:
    """The backend name to use: *name*, else ``cluster.backend``; ``auto`` is resolved.

    ``auto`` is ``existing`` with a scheduler address, ``slurm`` with SLURM
    options, else ``local``.  A scheduler address with another backend is a
    :class:`~ebook2audio_dask.errors.UsageError`.
    """
    wanted = str(config.get("cluster.backend", override=name) or "auto").strip().lower()
    if wanted == "auto":
        if request.scheduler:
            return "existing"
        return "slurm" if request.slurm is not None else "local"
    if request.scheduler and wanted != "existing":
        raise UsageError(
            f"a scheduler address runs on an existing cluster: "
            f"it cannot be combined with the {wanted!r} cluster backend"
        )
    return wanted


def cluster_client(cluster, adapt: tuple[int, int] | None = None) -> tuple[Client, Callable]:
    """A client of *cluster* (a Dask cluster manager) and a function closing both.

    With *adapt* ``(minimum, maximum)`` the cluster is made adaptive with
    :class:`~.adaptive.SynthesisAdaptive` first.  *cluster* is closed if the
    client cannot be made.
    """
    try:
        if adapt:
            cluster.adapt(minimum=adapt[0], maximum=adapt[1], Adaptive=SynthesisAdaptive)
        client = Client(cluster)
    except BaseException:
        cluster.close()
        raise

    def close() -> None:
        try:
            client.close()
        finally:
            cluster.close()

    return client, close


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
    backend: str | None = None,
) -> Iterator[Client]:
    """Yield a client: the one given, or one of the cluster *backend* starts or reaches.

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
    *backend* names the cluster backend (:func:`backend_names`; default
    ``ebook2audio.cluster.backend``, ``auto``: see :func:`resolve_backend`).
    Clients and clusters created here are closed on exit; a given *client* is
    not.  Every worker gets the :class:`~.gpus.EngineTeardown` plugin (once),
    so loaded models (and their GPU memory) are released when a worker stops.
    """
    if client is not None:
        ensure_engine_teardown(client)
        yield client
        return
    request = ClusterRequest(
        scheduler=scheduler or None,
        n_workers=n_workers,
        engine_threads=engine_threads,
        gpus=gpus,
        adapt=adapt or None,
        slurm=(slurm if isinstance(slurm, dict) else {}) if slurm else None,
        security=security,
        tls=tls,
        memory_limit=memory_limit,
        slots_per_gpu=slots_per_gpu,
    )
    chosen = get_backend(resolve_backend(backend, request))
    c, close = chosen.start(request)
    try:
        ensure_engine_teardown(c)
        yield c
    finally:
        close()
