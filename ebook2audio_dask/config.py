"""Configuration through :mod:`dask.config`.

The package's defaults live in ``ebook2audio.yaml`` (shipped in the package)
under the ``ebook2audio`` namespace, as dask-jobqueue does for ``jobqueue``.
They are merged into dask's configuration on import, so the usual dask ways
of overriding work: a YAML file in ``~/.config/dask/``, ``dask.config.set``,
or environment variables such as ``DASK_EBOOK2AUDIO__CACHE=s3://bucket/chunks``.

That file is the **only** default: code reads a key with ``get("key")`` (or
``get("key", override=argument)``) and never repeats its default
(``tests/test_config_schema.py`` checks every call).  Every key is described,
typed and marked with where it is read (``x-read-by``: ``client``, ``worker``
or ``both``) in ``ebook2audio-schema.yaml``, a JSON Schema written as YAML
(as distributed does with ``distributed-schema.yaml``), from which
``docs/configuration.md`` is generated (``python docs/gen_config.py``).
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import os
from collections.abc import Iterator, Mapping
from typing import Any

import dask.config
import yaml

__all__ = [
    "DEFAULTS_FILE",
    "SCHEMA_FILE",
    "applied",
    "defaults",
    "get",
    "schema",
    "schema_leaves",
    "snapshot",
]

DEFAULTS_FILE = os.path.join(os.path.dirname(__file__), "ebook2audio.yaml")
SCHEMA_FILE = os.path.join(os.path.dirname(__file__), "ebook2audio-schema.yaml")

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
        Returned when the key is missing (else
        :class:`~ebook2audio_dask.errors.UsageError`, naming the key).  Only
        for keys that ``ebook2audio.yaml`` does not have: its keys take their
        default from there.
    override
        When not ``None``, returned as-is: lets callers write
        ``config.get("cache", override=cache)`` for "argument or config".
    """
    if override is not None:
        return override
    sent = _SENT.get()
    if sent is not None:
        node: Any = sent
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            return node
    try:
        return dask.config.get(f"ebook2audio.{key}", default=default)
    except KeyError:
        # Every key has a packaged default, so a missing one means a user setting replaced
        # a whole section (dask.config.set({"ebook2audio.output.loudness": {...}}) with
        # fewer keys): a usage error in one line, not a traceback.
        from .errors import UsageError

        raise UsageError(
            f"configuration: ebook2audio.{key} is not set (was a whole section replaced? "
            "set single keys, e.g. DASK_EBOOK2AUDIO__OUTPUT__LOUDNESS__INTEGRATED=-18)"
        ) from None


#: The client's settings a task brought with it (see :func:`applied`): per thread/context.
_SENT: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "ebook2audio_sent_settings", default=None
)


def snapshot(section: str, *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """This process's values of a whole section, to send with a task (see :func:`applied`).

    Parameters
    ----------
    section : str
        A top-level key below ``ebook2audio``, e.g. ``"ingest"``.
    exclude : tuple of str
        Keys of the section left to each worker's own configuration (what
        names something on the worker's machine, such as a program's path).

    Returns
    -------
    dict
        ``{section: {key: value, ...}}``, a copy.
    """
    values = copy.deepcopy(get(section))
    for key in exclude:
        values.pop(key, None)
    return {section: values}


@contextlib.contextmanager
def applied(sent: Mapping[str, Any] | None) -> Iterator[None]:
    """Within the block, :func:`get` answers from *sent* (a :func:`snapshot`) first.

    For tasks: the client's settings reach an external cluster, whose workers
    read their own configuration otherwise.  Only this thread (context) sees
    them, so tasks running side by side on a worker never mix their settings,
    and nothing is left behind.  ``None``: the worker's own configuration.
    """
    token = _SENT.set(sent)
    try:
        yield
    finally:
        _SENT.reset(token)


def defaults() -> dict[str, Any]:
    """The packaged defaults below ``ebook2audio`` (a copy of ``ebook2audio.yaml``)."""
    with open(DEFAULTS_FILE, encoding="utf-8") as f:
        return yaml.safe_load(f)["ebook2audio"]


@functools.cache
def _schema() -> dict[str, Any]:
    with open(SCHEMA_FILE, encoding="utf-8") as f:
        return yaml.safe_load(f)


def schema() -> dict[str, Any]:
    """The JSON Schema of the configuration (``ebook2audio-schema.yaml``), as a dict."""
    return _schema()


def schema_leaves(
    node: dict[str, Any] | None = None, prefix: str = ""
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(dotted key, schema)`` of every setting below ``ebook2audio``, in file order.

    A setting is a schema node without ``properties`` (a mapping such as
    ``synthesize.resources`` is one setting).
    """
    if node is None:
        node = schema()["properties"]["ebook2audio"]
    for name, sub in node["properties"].items():
        if "properties" in sub:
            yield from schema_leaves(sub, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", sub
