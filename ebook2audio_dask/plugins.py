"""Plugins found by name: built-in targets and installed entry points.

Speech engines (entry-point group ``ebook2audio_dask.engines``) and cluster
backends (``ebook2audio_dask.clusters``) are looked up the same way: a table
of built-in ``"module:attribute"`` targets (so a source tree that was never
installed still finds its own), overridden by the entry points of the
group, and imported only when one is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

__all__ = ["discover", "load"]


def discover(group: str, builtin: Mapping[str, str]) -> dict[str, str]:
    """Every plugin of *group*: name -> ``"module:attribute"``.

    Parameters
    ----------
    group : str
        Entry-point group, e.g. ``"ebook2audio_dask.engines"``.
    builtin : mapping of str to str
        The package's own plugins; an installed entry point of the same name wins.
    """
    found = dict(builtin)
    for ep in entry_points(group=group):
        found[ep.name] = ep.value
    return found


def load(target: str) -> Any:
    """Import and return what a ``"module:attribute"`` target names."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module.strip()), attr.strip())
