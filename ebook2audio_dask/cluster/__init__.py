"""Where the graph runs: cluster backends behind one small interface.

Built-in backends (:mod:`.backends`): ``local``, an embedded LocalCluster
(one worker per GPU when there are GPUs, :mod:`.local`, :mod:`.gpus`);
``existing``, a scheduler already running (:mod:`.existing`); ``slurm``,
SLURM jobs through dask-jobqueue (:mod:`.slurm`).  ``local`` and ``slurm``
become adaptive on request (:mod:`.adaptive`); TLS is in :mod:`.security`.
:func:`client_for` picks one (``cluster.backend``, default ``auto``).

Adding a backend (dask-kubernetes, dask-cloudprovider, Coiled...) is one
module with a class that has a ``name`` and ``start(request) -> (client,
close)`` (:class:`ClusterBackend`; :func:`cluster_client` builds the pair
from a cluster manager), plus one entry point in the
``ebook2audio_dask.clusters`` group::

    [project.entry-points."ebook2audio_dask.clusters"]
    kubernetes = "mypackage.kube:KubeBackend"

It is then chosen with ``cluster.backend: kubernetes``, or
``client_for(backend="kubernetes")``.
"""

from .adaptive import SynthesisAdaptive, parse_adapt, synthesis_target
from .backends import (
    ClusterBackend,
    ClusterRequest,
    backend_names,
    client_for,
    cluster_client,
    get_backend,
    register_backend,
    resolve_backend,
    unregister_backend,
)
from .gpus import EngineTeardown, GPULocalCluster, detect_gpus, ensure_engine_teardown, parse_gpus
from .local import default_n_workers, local_cluster
from .security import client_security, embedded_security
from .slurm import slurm_cluster, slurm_job_script

__all__ = [
    "ClusterBackend",
    "ClusterRequest",
    "EngineTeardown",
    "GPULocalCluster",
    "SynthesisAdaptive",
    "backend_names",
    "client_for",
    "client_security",
    "cluster_client",
    "default_n_workers",
    "detect_gpus",
    "embedded_security",
    "ensure_engine_teardown",
    "get_backend",
    "local_cluster",
    "parse_adapt",
    "parse_gpus",
    "register_backend",
    "resolve_backend",
    "slurm_cluster",
    "slurm_job_script",
    "synthesis_target",
    "unregister_backend",
]
