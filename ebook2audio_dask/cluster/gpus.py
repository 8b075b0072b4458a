"""One worker per GPU, and engines released when a worker stops.

As dask-cuda's ``LocalCUDACluster`` does, each worker process of
:class:`GPULocalCluster` is started with ``CUDA_VISIBLE_DEVICES`` naming its
own GPU, so torch inside it sees exactly one device (``cuda:0``) and a model
loaded there stays resident on that GPU for every task the worker runs.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from collections.abc import Iterable

from distributed import LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin

from ..logs import get_logger

__all__ = [
    "EngineTeardown",
    "GPULocalCluster",
    "detect_gpus",
    "ensure_engine_teardown",
    "parse_gpus",
]

logger = get_logger(__name__)


def detect_gpus() -> list[str]:
    """GPUs of this machine: ``$CUDA_VISIBLE_DEVICES`` when set, else ``nvidia-smi -L``.

    Returns
    -------
    list of str
        Device ids for ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs); empty
        without NVIDIA GPUs.  torch is not imported.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run(
            [smi, "-L"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(ln for ln in out.splitlines() if ln.startswith("GPU "))]


def parse_gpus(gpus: str | Iterable[str] | None) -> list[str]:
    """``"auto"`` → :func:`detect_gpus`; ``"none"``/``""`` → ``[]``; ``"0,1"`` → ``["0", "1"]``."""
    if gpus is None:
        return []
    if isinstance(gpus, str):
        text = gpus.strip().lower()
        if text == "auto":
            return detect_gpus()
        if text in ("", "none", "no", "false", "0 gpus"):
            return []
        return [g.strip() for g in gpus.split(",") if g.strip()]
    return [str(g) for g in gpus]


class GPULocalCluster(LocalCluster):
    """A :class:`distributed.LocalCluster` with one worker process per GPU.

    Parameters
    ----------
    gpus : list of str
        Values for each worker's ``CUDA_VISIBLE_DEVICES``.
    slots_per_gpu : int
        Synthesize tasks each worker runs at once (``cluster.slots-per-gpu``):
        the worker advertises *slots_per_gpu* times the ``resources`` one task
        requests and runs at least that many threads, which share the
        worker's one copy of each engine.  More than 1 helps where one stream
        of a small model leaves a big GPU idle (see docs/engines.md).
    **kwargs
        Passed to :class:`distributed.LocalCluster` (``n_workers`` is ignored).
    """

    def __init__(self, gpus: list[str], slots_per_gpu: int = 1, **kwargs):
        if not gpus:
            raise ValueError("GPULocalCluster needs at least one GPU")
        slots = int(slots_per_gpu)
        if slots < 1:
            raise ValueError(f"slots_per_gpu must be at least 1, not {slots_per_gpu!r}")
        self.gpus = list(gpus)
        self.slots_per_gpu = slots
        kwargs["n_workers"] = 0
        kwargs["resources"] = {
            name: amount * slots for name, amount in (kwargs.get("resources") or {}).items()
        }
        kwargs["threads_per_worker"] = max(int(kwargs.get("threads_per_worker") or 1), slots)
        super().__init__(**kwargs)
        self.scale(len(self.gpus))

    def new_worker_spec(self):
        """The next worker's spec, pinned to a GPU no running worker holds."""
        spec = super().new_worker_spec()
        ((name, worker),) = spec.items()
        taken = [
            (w.get("options", {}).get("env") or {}).get("CUDA_VISIBLE_DEVICES")
            for w in self.worker_spec.values()
        ]
        free = [g for g in self.gpus if g not in taken] or self.gpus
        worker = copy.deepcopy(worker)
        options = worker.setdefault("options", {})
        options["env"] = {**(options.get("env") or {}), "CUDA_VISIBLE_DEVICES": free[0]}
        return {name: worker}


class EngineTeardown(WorkerPlugin):
    """Worker plugin: close every loaded engine (and free GPU memory) when the worker stops."""

    name = "ebook2audio-engine-teardown"

    def teardown(self, worker) -> None:
        from ..engines import unload_engines

        unload_engines()


def _has_plugin(name: str, dask_scheduler=None) -> bool:
    return name in dask_scheduler.worker_plugins


def ensure_engine_teardown(client) -> None:
    """Register :class:`EngineTeardown` on *client*'s cluster unless it already is.

    Registering a plugin again under the same name tears the old one down,
    which would unload every resident model: so it is registered only once.
    """
    if not client.run_on_scheduler(_has_plugin, EngineTeardown.name):
        client.register_plugin(EngineTeardown())
