"""The cluster seam: backends picked by name, from entry points, behind ``client_for``."""

from __future__ import annotations

import sys

import dask
import pytest
from helpers import ROOT

from ebook2audio_dask.cluster import (
    ClusterBackend,
    ClusterRequest,
    backend_names,
    client_for,
    get_backend,
    register_backend,
    resolve_backend,
    unregister_backend,
)
from ebook2audio_dask.errors import UsageError

PLUGINS = ROOT / "tests" / "plugins"


@pytest.fixture
def plugins(monkeypatch):
    """``tests/plugins`` on ``sys.path``: its ``inline`` backend is an installed entry point."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    yield
    sys.modules.pop("inline_cluster", None)


def test_builtin_backends_are_registered():
    assert {"local", "existing", "slurm"} <= set(backend_names())
    for name in ("local", "existing", "slurm"):
        backend = get_backend(name)
        assert isinstance(backend, ClusterBackend) and backend.name == name


def test_auto_picks_existing_then_slurm_then_local():
    assert resolve_backend(None, ClusterRequest(scheduler="tcp://127.0.0.1:1")) == "existing"
    assert resolve_backend("auto", ClusterRequest(slurm={})) == "slurm"
    assert resolve_backend(None, ClusterRequest()) == "local"
    assert resolve_backend("SLURM", ClusterRequest()) == "slurm"
    with dask.config.set({"ebook2audio.cluster.backend": "slurm"}):
        assert resolve_backend(None, ClusterRequest()) == "slurm"
        assert resolve_backend("local", ClusterRequest()) == "local"  # the argument wins


def test_a_scheduler_with_another_backend_is_a_usage_error():
    with pytest.raises(UsageError, match="existing cluster"):
        resolve_backend("local", ClusterRequest(scheduler="tcp://127.0.0.1:1"))


def test_unknown_backend_names_the_known_ones():
    with pytest.raises(UsageError, match=r"unknown cluster backend 'nope' \(known: auto, "):
        with client_for(backend="nope"):
            pass


def test_existing_backend_needs_an_address():
    with pytest.raises(UsageError, match="scheduler address"):
        get_backend("existing").start(ClusterRequest())


def test_entry_point_backend_is_picked_by_name_and_runs_a_graph(plugins):
    assert "inline" in backend_names()
    with client_for(backend="inline", n_workers=3) as client:
        assert client.submit(sum, [1, 2, 3], resources={"GPU": 1}).result() == 6
        workers = client.scheduler_info()["workers"]
        assert [w["resources"] for w in workers.values()] == [{"GPU": 1}]
        plugins = client.run(lambda dask_worker: list(dask_worker.plugins))
        assert all("ebook2audio-engine-teardown" in p for p in plugins.values())
    import inline_cluster

    assert [r.n_workers for r in inline_cluster.STARTED] == [3]  # the request reached it
    assert client.status == "closed"


def test_entry_point_backend_is_picked_by_config(plugins):
    with dask.config.set({"ebook2audio.cluster.backend": "inline"}):
        with client_for() as client:
            assert client.submit(len, "abc").result() == 3


class _Counting:
    """A backend registered in-process: wraps the built-in ``local`` one."""

    name = "counting"

    def __init__(self):
        self.requests = []

    def start(self, request):
        self.requests.append(request)
        return get_backend("local").start(request)


def test_registered_backend_wraps_local():
    backend = _Counting()
    register_backend(backend)
    try:
        with client_for(n_workers=1, gpus="none", backend="counting") as client:
            assert client.submit(len, "ab").result() == 2
    finally:
        unregister_backend("counting")
    assert [r.gpus for r in backend.requests] == ["none"]


def test_register_backend_refuses_an_object_without_start():
    with pytest.raises(TypeError):
        register_backend(object())
