"""Where the graph runs: an embedded LocalCluster, or an existing cluster."""

from .local import client_for, default_n_workers, local_cluster

__all__ = ["client_for", "default_n_workers", "local_cluster"]
