"""Configuration through :mod:`dask.config`.

The package's defaults live in ``ebook2audio.yaml`` (shipped in the package)
under the ``ebook2audio`` namespace, as dask-jobqueue does for ``jobqueue``.
They are merged into dask's configuration on import, so the usual dask ways
of overriding work: a YAML file in ``~/.config/dask/``, ``dask.config.set``,
or environment variables such as ``DASK_EBOOK2AUDIO__CACHE=s3://bucket/chunks``.
"""

from __future__ import annotations

import os
from typing import Any

import dask.config
import yaml

__all__ = ["DEFAULTS_FILE", "get"]

DEFAULTS_FILE = os.path.join(os.path.dirname(__file__), "ebook2audio.yaml")

with open(DEFAULTS_FILE, encoding="utf-8") as _f:
    _defaults = yaml.safe_load(_f)

dask.config.update_defaults(_defaults)


def get(key: str, default: Any = dask.config.no_default, override: Any = None) -> Any:
    """Read ``ebook2audio.<key>`` from dask's configuration.

    Parameters
    ----------
    key : str
        Dotted key below the ``ebook2audio`` namespace, e.g. ``"pauses.chapter"``.
    default
        Returned when the key is missing (else ``KeyError``).
    override
        When not ``None``, returned as-is: lets callers write
        ``config.get("cache", override=cache)`` for "argument or config".
    """
    if override is not None:
        return override
    return dask.config.get(f"ebook2audio.{key}", default=default)
