"""Where the graph runs: an embedded LocalCluster (one worker per GPU when
there are GPUs), or an existing cluster."""

from .gpus import EngineTeardown, GPULocalCluster, detect_gpus, ensure_engine_teardown, parse_gpus
from .local import client_for, default_n_workers, local_cluster

__all__ = [
    "client_for",
    "default_n_workers",
    "local_cluster",
    "GPULocalCluster",
    "EngineTeardown",
    "ensure_engine_teardown",
    "detect_gpus",
    "parse_gpus",
]
