"""Shared fixtures: the corpus, a private chunk store, a module-wide embedded cluster, and dask
config isolation."""

from __future__ import annotations

from pathlib import Path

import dask
import pytest

# imported at collection: registers the ebook2audio config defaults before a test saves the config
import ebook2audio_dask

try:  # no hypothesis deadline by default: a busy machine must not fail a property test
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # hypothesis is part of the dev install; the tests using it skip without it
    pass
else:
    _hypothesis_settings.register_profile("no-deadline", deadline=None)
    _hypothesis_settings.load_profile("no-deadline")

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The shared corpus of real ebooks (``../shared/corpus``)."""
    if not CORPUS.is_dir():  # pragma: no cover - the corpus is part of the project's checkout
        pytest.fail(f"corpus not found at {CORPUS}")
    return CORPUS


@pytest.fixture
def cache_dir(tmp_path: Path) -> str:
    """A fresh chunk store for one test."""
    return str(tmp_path / "chunks")


@pytest.fixture(scope="module")
def cluster_config() -> dict:
    """Dask config the module's ``client`` cluster starts with (none: a module overrides it).

    Worker processes get the config their cluster starts with (their nanny
    sends it), not what a test sets later.
    """
    return {}


@pytest.fixture(scope="module")
def client(cluster_config):
    """One embedded cluster (2 worker processes, GPU=1 each) shared by a test module."""
    from distributed import Client

    with dask.config.set(cluster_config):
        cluster = ebook2audio_dask.local_cluster(2, dashboard_address=None)
    with cluster, Client(cluster) as c:
        yield c


@pytest.fixture(autouse=True)
def _restore_dask_config():
    """distributed's gen_cluster resets dask's global config to its import-time copy
    and leaves it so: put the config back after every test."""
    import copy

    import dask

    saved = copy.deepcopy(dask.config.config)
    yield
    dask.config.config.clear()
    dask.config.config.update(saved)


@pytest.fixture(autouse=True)
def _private_default_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's real ~/.cache from tests."""
    import dask

    store = tmp_path_factory.mktemp("default-cache")
    monkeypatch.setenv("DASK_EBOOK2AUDIO__CACHE", str(store))
    with dask.config.set({"ebook2audio.cache": str(store)}):
        yield
