"""Size limits of the ingest stage, read from the configuration at call time.

The defaults live only in the packaged ``ebook2audio.yaml`` (``ingest:``
``max-member-size``, ``max-total-size``, ``max-file-size``,
``max-text-size``, ``calibre-max-output-size``); :func:`size_limit` reads
the current value each time, so ``dask.config.set`` takes effect at once.
Books are read on workers: a conversion sends the client's ``ingest``
section with each parse task (:func:`ebook2audio_dask.config.applied`), so
the client's limits count on an external cluster too; a reader called
directly (``ebook2audio inspect``) reads its own process's configuration.
"""

from __future__ import annotations

from dask.utils import parse_bytes

from .. import config
from ..errors import UsageError

__all__ = ["size_limit"]


def size_limit(key: str) -> int:
    """The ``ingest.<key>`` size limit in bytes.

    Parameters
    ----------
    key : str
        ``"max-member-size"``, ``"max-total-size"``, ``"max-file-size"``,
        ``"max-text-size"`` or ``"calibre-max-output-size"``.

    Returns
    -------
    int
        The configured value: an int, or a string such as ``"256MiB"``.

    Raises
    ------
    UsageError
        The value is not a positive size.
    """
    value = config.get(f"ingest.{key}")
    try:
        limit = parse_bytes(value) if isinstance(value, str) else int(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"ebook2audio.ingest.{key}: not a size: {value!r}") from exc
    if limit <= 0:
        raise UsageError(f"ebook2audio.ingest.{key}: must be positive, not {value!r}")
    return limit
