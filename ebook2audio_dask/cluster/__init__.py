"""Where the graph runs: an embedded LocalCluster (one worker per GPU when
there are GPUs, adaptive on request), SLURM jobs through dask-jobqueue, or an
existing cluster."""

from .adaptive import SynthesisAdaptive, parse_adapt, synthesis_target
from .gpus import EngineTeardown, GPULocalCluster, detect_gpus, ensure_engine_teardown, parse_gpus
from .local import client_for, default_n_workers, local_cluster
from .security import client_security, embedded_security
from .slurm import slurm_cluster, slurm_job_script

__all__ = [
    "EngineTeardown",
    "GPULocalCluster",
    "SynthesisAdaptive",
    "client_for",
    "client_security",
    "default_n_workers",
    "detect_gpus",
    "embedded_security",
    "ensure_engine_teardown",
    "local_cluster",
    "parse_adapt",
    "parse_gpus",
    "slurm_cluster",
    "slurm_job_script",
    "synthesis_target",
]
