"""Where the graph runs: an embedded LocalCluster (one worker per GPU when
there are GPUs, adaptive on request), SLURM jobs through dask-jobqueue, or an
existing cluster."""

from .adaptive import SynthesisAdaptive, parse_adapt, synthesis_target
from .gpus import EngineTeardown, GPULocalCluster, detect_gpus, ensure_engine_teardown, parse_gpus
from .security import client_security, embedded_security
from .local import client_for, default_n_workers, local_cluster
from .slurm import slurm_cluster, slurm_job_script

__all__ = [
    "client_for",
    "default_n_workers",
    "local_cluster",
    "GPULocalCluster",
    "EngineTeardown",
    "ensure_engine_teardown",
    "detect_gpus",
    "parse_gpus",
    "SynthesisAdaptive",
    "synthesis_target",
    "parse_adapt",
    "slurm_cluster",
    "slurm_job_script",
    "client_security",
    "embedded_security",
]
