"""Retries for storage calls: transient errors are retried with backoff, permanent ones fail fast.

s3fs already retries a few times within a second or two (SlowDown, timeouts);
botocore makes one attempt per request (see :func:`.fs.options_for`), and
every S3 request has finite connect and read timeouts
(``storage.connect-timeout``, ``storage.read-timeout``), so a server that
never answers raises a timeout here rather than hanging; this layer covers
what outlasts s3fs's tries — a throttled or briefly unavailable
store, a reset connection — with exponential backoff and jitter (tenacity),
``storage.retries`` attempts over at most ``storage.retry-seconds``.  A
permanent error (no such bucket or key, access denied, bad request) is raised
at once as a :class:`~ebook2audio_dask.errors.StorageError` naming the URL.
"""

from __future__ import annotations

import errno
import random
import socket
import time
from collections.abc import Callable
from typing import TypeVar

import tenacity

from .. import config
from ..errors import StorageError, one_line
from ..logs import get_logger

__all__ = ["is_transient", "storage_error", "with_retries"]

logger = get_logger(__name__)
T = TypeVar("T")

_TRANSIENT_ERRNOS = {
    errno.EBUSY, errno.EAGAIN, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNABORTED,
    errno.ECONNREFUSED, errno.EPIPE, errno.EHOSTUNREACH, errno.ENETUNREACH,
    getattr(errno, "EREMOTEIO", errno.EIO),
}  # fmt: skip
#: Exception class names of HTTP/S3 client libraries that mean "try again".
_TRANSIENT_NAMES = {
    "ServerDisconnectedError", "ClientOSError", "ClientConnectorError", "ClientPayloadError",
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
    "ResponseParserError", "IncompleteRead", "HTTPClientError", "FSTimeoutError",
    "ServerTimeoutError", "ConnectionTimeoutError", "SocketTimeoutError", "ConnectTimeout",
    "ReadTimeout",
}  # fmt: skip
_TRANSIENT_CODES = ("SlowDown", "Throttl", "ServiceUnavailable", "InternalError", "RequestTimeout",
                    "503", "500", "502", "504", "reduce your request rate")  # fmt: skip


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying (throttling, 5xx, timeouts, connection resets)."""
    if isinstance(exc, (FileNotFoundError, PermissionError, FileExistsError, IsADirectoryError,
                        NotADirectoryError, StorageError)):  # fmt: skip
        return False
    if isinstance(exc, (TimeoutError, socket.timeout, ConnectionError)):
        return True
    if any(type(e).__name__ in _TRANSIENT_NAMES for e in _chain(exc)):
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    text = str(exc)
    return isinstance(exc, OSError) and any(code in text for code in _TRANSIENT_CODES)


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def storage_error(url: str, exc: BaseException, action: str) -> StorageError:
    """A one-line :class:`StorageError` for a permanent failure of *action* on *url*."""
    if isinstance(exc, FileNotFoundError):
        problem = "no such bucket, folder or object"
    elif isinstance(exc, PermissionError):
        problem = "access denied (check the credentials in storage_options)"
    else:
        problem = one_line(exc)
    return StorageError(f"{url}: cannot {action}: {problem}")


def with_retries(fn: Callable[[], T], *, url: str, action: str, translate: bool = True) -> T:
    """Call *fn*, retrying transient storage errors; raise a :class:`StorageError` otherwise.

    Parameters
    ----------
    fn : callable
        The storage call, without arguments.
    url : str
        What it works on (for messages; never includes credentials).
    action : str
        Verb phrase for messages: ``"write the chunk"``.
    translate : bool
        Turn a permanent error into a :class:`StorageError` (default); with
        ``False`` it is re-raised as it is (callers that word their own errors).
    """
    try:  # the common case, without any retry machinery (a chunk write or lookup is ~0.1 ms)
        return fn()
    except StorageError:
        raise
    except Exception as exc:
        if not is_transient(exc):
            if not translate:
                raise
            raise storage_error(url, exc, action) from exc
        first = exc
    attempts = int(config.get("storage.retries"))
    budget = float(config.get("storage.retry-seconds"))

    def log(
        state: tenacity.RetryCallState | None, exc: BaseException | None = None, attempt: int = 1
    ) -> None:
        if state is not None:
            exc = state.outcome.exception() if state.outcome else None
            attempt = state.attempt_number + 1
        logger.warning("%s: %s failed (%s), retry %d of %d", url, action,
                       one_line(exc, 120), attempt, attempts - 1)  # fmt: skip

    if attempts <= 1:
        raise StorageError(
            f"{url}: cannot {action}: still failing after 1 attempt: {one_line(first, 160)}"
        ) from first
    log(None, first)
    started = time.monotonic()
    time.sleep(min(8.0, 0.5 + random.uniform(0, 1)))  # the first backoff, as tenacity's would be
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        # exponential backoff with jitter, counted from the attempt made before tenacity
        wait=lambda state: min(8.0, 0.5 * 2**state.attempt_number + random.uniform(0, 1)),
        stop=tenacity.stop_after_attempt(attempts - 1)
        | tenacity.stop_after_delay(max(0.0, budget - (time.monotonic() - started))),
        before_sleep=log,
        reraise=True,
    )
    try:
        return retrying(fn)
    except StorageError:
        raise
    except Exception as exc:
        if is_transient(exc):
            tried = 1 + retrying.statistics.get(
                "attempt_number", attempts - 1
            )  # fewer when the budget ran out
            raise StorageError(f"{url}: cannot {action}: still failing after {tried} attempts: "
                               f"{one_line(exc, 160)}") from exc  # fmt: skip
        if not translate:
            raise
        raise storage_error(url, exc, action) from exc
