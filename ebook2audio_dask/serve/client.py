"""A Python client of a running ``ebook2audio serve``: what ``ebook2audio submit`` uses.

:class:`ServerClient` wraps the REST API (``docs/serve.md``) with httpx: upload
books, create a job, follow its events, download its outputs.  Every failure
(no server at the URL, a refused token, a request the server refuses, a
broken connection) is one :class:`ServerError`, a one-line
:class:`~ebook2audio_dask.errors.Ebook2AudioError` naming the server and the
detail the server gave, with the exit code ``ebook2audio submit`` exits with.

Example
-------
>>> from ebook2audio_dask.serve.client import ServerClient
>>> with ServerClient("http://127.0.0.1:7860") as server:  # doctest: +SKIP
...     upload = server.upload("book.epub")
...     job = server.create_job([{"upload_id": upload["id"], "chapters": "2-3"}],
...                             {"engine": "espeak"})
...     for job in server.events(job["id"]):
...         print(job["state"], job["progress"]["fraction"])
"""

from __future__ import annotations

import json
import os
import posixpath
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from ..errors import EXIT_BOOK_FAILED, EXIT_USAGE, Ebook2AudioError, one_line, terminal_safe

__all__ = ["FINAL_STATES", "ServerClient", "ServerError", "safe_file_name"]

#: Job states after which nothing changes any more (unless the job is retried).
FINAL_STATES = frozenset({"done", "failed", "cancelled"})

#: Bytes read from a book per upload block.
_BLOCK = 1 << 20


class ServerError(Ebook2AudioError):
    """A request to an ebook2audio server failed.

    Its message is one line: the server's URL, then what went wrong (the
    request, the HTTP status and the server's ``detail``, or why no answer
    came).

    Parameters
    ----------
    server : str
        The server's base URL.
    problem : str
        What went wrong.
    status : int, optional
        The HTTP status of the answer, when there was one.
    exit_code : int, optional
        Overrides the exit code below.

    Attributes
    ----------
    exit_code : int
        2 (usage) when the request could not be made as given: no server
        answers at the URL, the token is missing or refused (401/403), or the
        server refuses the request (another 4xx: an unknown option, a voice the
        engine lacks, a book over the size limit); 1 otherwise (the server
        failed, 5xx, or the connection broke while following a job).
    """

    def __init__(
        self, server: str, problem: str, status: int | None = None, exit_code: int | None = None
    ):
        self.server = server
        self.problem = one_line(problem)
        self.status = status
        if exit_code is None:
            refused = status is None or 400 <= status < 500
            exit_code = EXIT_USAGE if refused else EXIT_BOOK_FAILED
        self.exit_code = exit_code
        super().__init__(f"{terminal_safe(server)}: {self.problem}")

    def __reduce__(self):
        return (type(self), (self.server, self.problem, self.status, self.exit_code))


def safe_file_name(name: str) -> str:
    """*name* if it is a plain file name a server may give, else :class:`ValueError`.

    A download lands in the output folder under the name the server gives;
    a name with a folder part, ``..``, a NUL or a control character could
    write elsewhere or hide itself, so it is refused, whatever the server.
    """
    if (
        not name
        or name in (".", "..")
        or posixpath.basename(name) != name
        or "\\" in name
        or terminal_safe(name) != name
    ):
        raise ValueError(f"{name!r} is not a plain file name")
    return name


def _detail(response: httpx.Response) -> str:
    """The server's ``detail`` (FastAPI's validation list joined), else the body's start."""
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # FastAPI's 422: [{"loc": [...], "msg": "..."}, ...]
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(x) for x in item.get("loc", ()) if x != "body")
                parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
            else:
                parts.append(str(item))
        detail = "; ".join(parts)
    if detail is None:
        detail = response.text[:200] if response.text else response.reason_phrase
    return str(detail)


class ServerClient:
    """A client of one ``ebook2audio serve`` at *url*.

    Parameters
    ----------
    url : str
        The server's base URL, ``http://HOST:PORT`` (a path prefix is kept,
        for a server behind a reverse proxy at ``https://host/e2a``).
    token : str, optional
        The API token, sent as ``Authorization: Bearer TOKEN`` (which also
        satisfies the server's CSRF check).
    timeout : float
        Seconds to wait for a server's answer (not for a whole upload,
        download or event stream).

    Raises
    ------
    ServerError
        *url* is not an ``http://`` or ``https://`` URL.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0):
        url = url.strip().rstrip("/")
        if "://" not in url:
            url = "http://" + url
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise ServerError(url, f"not a server URL ({one_line(exc)})") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ServerError(url, "not a server URL (http://HOST:PORT or https://...)")
        self.url = url
        self.timeout = timeout
        self.token = token
        self.csrf: str | None = None
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(
            base_url=url + "/",
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
            follow_redirects=False,
        )

    # -- plumbing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connections."""
        self.http.close()

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def transport_error(self, exc: httpx.HTTPError, what: str) -> ServerError:
        """*exc* (no answer, or a broken one) as a :class:`ServerError` about *what*."""
        if isinstance(exc, httpx.ConnectError):
            return ServerError(self.url, f"cannot connect ({one_line(exc) or 'refused'})")
        if isinstance(exc, httpx.TimeoutException):
            return ServerError(self.url, f"{what}: no answer in {self.timeout:g} s")
        return ServerError(
            self.url, f"{what}: {type(exc).__name__}: {one_line(exc)}", exit_code=EXIT_BOOK_FAILED
        )

    def check(self, response: httpx.Response) -> httpx.Response:
        """*response* when it is a success, else a :class:`ServerError` with its detail."""
        if response.is_success:
            return response
        request = response.request
        path = request.url.raw_path.decode("ascii", "replace").split("?")[0]
        problem = f"{request.method} {path}: {response.status_code} {_detail(response)}"
        if response.status_code == 401:
            problem += " (give the server's token: --token-file FILE or $EBOOK2AUDIO_TOKEN)"
        raise ServerError(self.url, problem, status=response.status_code)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request to *path* (relative to the server URL); its JSON answer.

        Raises
        ------
        ServerError
            No answer, or an error status.
        """
        if method not in ("GET", "HEAD", "OPTIONS") and not self.token:
            kwargs["headers"] = {**self.csrf_header(), **(kwargs.get("headers") or {})}
        try:
            response = self.http.request(method, path.lstrip("/"), **kwargs)
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, f"{method} /{path.lstrip('/')}") from None
        self.check(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ServerError(
                self.url,
                f"{method} /{path.lstrip('/')}: the answer is not JSON",
                status=response.status_code,
                exit_code=EXIT_BOOK_FAILED,
            ) from None

    def csrf_header(self) -> dict[str, str]:
        """``X-CSRF-Token`` for an unsafe request to a server without a token.

        With a token, its ``Authorization`` header satisfies the server's CSRF
        check; without one, the client asks ``GET /api/csrf`` once (which also
        sets the ``e2a_csrf`` cookie this client keeps) and sends the value back.
        """
        if self.csrf is None:
            self.csrf = str(self.request("GET", "api/csrf")["csrf"])
        return {"X-CSRF-Token": self.csrf}

    # -- the API -------------------------------------------------------------------------------

    def health(self) -> dict:
        """``GET /healthz``: ``{"ok": true, "connected": bool}``."""
        return self.request("GET", "healthz")

    def engines(self) -> list[dict]:
        """The server's engines (``GET /api/engines``), available ones first."""
        return self.request("GET", "api/engines")["engines"]

    def upload(self, path: str | os.PathLike, name: str | None = None) -> dict:
        """Upload the book at *path* (a local path or fsspec URL), streamed.

        Returns
        -------
        dict
            The upload's record: ``id``, ``name``, ``size``, ``summary``
            (``ebook2audio inspect --json``'s) or ``None``, ``error`` (why the
            book cannot be read, one line) or ``None``.

        Raises
        ------
        ServerError
            The server refuses it (413: over its size limit...), or no answer.
        OSError
            The book cannot be read here.
        """
        import fsspec

        path = os.fspath(path)
        name = name or posixpath.basename(path.replace(os.sep, "/").rstrip("/")) or "book"

        def blocks() -> Iterator[bytes]:
            with fsspec.open(path, "rb") as f:
                while block := f.read(_BLOCK):
                    yield block

        with fsspec.open(path, "rb"):  # fail here, before the request, if it cannot be read
            pass
        return self.request(
            "POST",
            "api/uploads",
            params={"filename": name},
            content=blocks(),
            headers={"Content-Type": "application/octet-stream"},
            timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 15.0), write=None),
        )

    def create_job(
        self,
        books: list[dict] | list[str],
        options: Mapping[str, Any] | None = None,
        priority: int = 0,
    ) -> dict:
        """``POST /api/jobs``: one job converting *books* with *options*.

        Parameters
        ----------
        books : list
            ``{"upload_id": ID, "chapters": "2-3" or None}`` per book, or
            upload ids.
        options : dict, optional
            The job's options (``engine``, ``voice``, ``format``...; those not
            given are the server's defaults).
        priority : int
            Higher runs first.

        Returns
        -------
        dict
            The job (``id``, ``state``, ``position``, ``books``...).
        """
        items = [{"upload_id": b, "chapters": None} if isinstance(b, str) else b for b in books]
        body = {"books": items, "options": dict(options or {}), "priority": int(priority)}
        return self.request("POST", "api/jobs", json=body)

    def job(self, job_id: str) -> dict:
        """``GET /api/jobs/{id}``."""
        return self.request("GET", f"api/jobs/{job_id}")

    def jobs(self) -> list[dict]:
        """Every job, in queue order (``GET /api/jobs``)."""
        return self.request("GET", "api/jobs")["jobs"]

    def cancel(self, job_id: str) -> dict:
        """Cancel a job (``POST /api/jobs/{id}/cancel``); the job after it."""
        return self.request("POST", f"api/jobs/{job_id}/cancel")

    def retry(self, job_id: str) -> dict:
        """Queue a job's failed and cancelled books again (``POST /api/jobs/{id}/retry``)."""
        return self.request("POST", f"api/jobs/{job_id}/retry")

    def set_priority(self, job_id: str, priority: int) -> dict:
        """Change a job's priority (``PATCH /api/jobs/{id}``)."""
        return self.request("PATCH", f"api/jobs/{job_id}", json={"priority": int(priority)})

    def events(self, job_id: str, reconnect_for: float = 0.0) -> Iterator[dict]:
        """The job as it changes (``GET /api/jobs/{id}/events``), until a final state.

        Yields the job at once, then after every change; stops after a job in
        :data:`FINAL_STATES`.

        Parameters
        ----------
        job_id : str
        reconnect_for : float
            When the stream breaks (a server restarted), reconnect for up to
            this many seconds before giving up (0: never).

        Raises
        ------
        ServerError
            No answer, an error status, or the stream broke (for longer than
            *reconnect_for*).
        """
        path = f"api/jobs/{job_id}/events"
        lost_since: float | None = None
        seen = False
        while True:
            try:
                for event, data in self.stream_events(path):
                    lost_since = None
                    if event not in ("job", "message"):
                        continue
                    seen = True
                    yield data
                    if data.get("state") in FINAL_STATES:
                        return
                raise httpx.RemoteProtocolError("the event stream ended before the job did")
            except (httpx.TransportError, ServerError) as exc:
                if isinstance(exc, ServerError) and exc.status not in (502, 503, 504):
                    raise
                now = time.monotonic()
                lost_since = lost_since if lost_since is not None else now
                if now - lost_since >= reconnect_for:
                    if isinstance(exc, ServerError):
                        raise
                    error = self.transport_error(exc, f"GET /{path}")
                    if seen:  # the job was submitted: losing it is no usage error
                        error.exit_code = EXIT_BOOK_FAILED
                    raise error from None
                time.sleep(min(2.0, reconnect_for))

    def stream_events(self, path: str) -> Iterator[tuple[str, Any]]:
        """``(event, data)`` of the server-sent events at *path*, data parsed as JSON."""
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 15.0), read=None)
        headers = {"Accept": "text/event-stream"}
        with self.http.stream("GET", path, headers=headers, timeout=timeout) as response:
            if not response.is_success:
                response.read()
                self.check(response)
            event, data = "message", []
            for line in response.iter_lines():
                if not line:
                    if data:
                        text = "\n".join(data)
                        try:
                            yield event, json.loads(text)
                        except ValueError:
                            yield event, text
                    event, data = "message", []
                elif line.startswith(":"):
                    continue  # a comment: keep-alive
                else:
                    field, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if field == "event":
                        event = value
                    elif field == "data":
                        data.append(value)

    def download(
        self,
        job_id: str,
        index: int,
        name: str,
        dest: str | os.PathLike,
        retry_for: float = 0.0,
    ) -> Path:
        """Stream one output file of a job's book to *dest* (a folder or a file path).

        Written to a temporary name next to it, renamed when complete: an
        interrupted download never leaves a partial file under the final name.
        When no answer comes or the transfer breaks (a server restarting), it
        is tried again every 2 s for up to *retry_for* seconds.

        Returns
        -------
        Path
            Where the file is.

        Raises
        ------
        ServerError
            The server does not have it (404), or the connection broke.
        ValueError
            *name* is not a plain file name (:func:`safe_file_name`).
        """
        safe_file_name(name)
        dest = Path(dest)
        target = dest / name if dest.is_dir() else dest
        part = target.with_name(f".{target.name}.part")
        path = f"api/jobs/{job_id}/books/{int(index)}/files/{_quote(name)}"
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 15.0))
        deadline = time.monotonic() + retry_for
        while True:
            try:
                with self.http.stream("GET", path, timeout=timeout) as response:
                    if not response.is_success:
                        response.read()
                        self.check(response)
                    with open(part, "wb") as f:
                        for block in response.iter_bytes(_BLOCK):
                            f.write(block)
                os.replace(part, target)
                return target
            except httpx.TransportError as exc:
                if time.monotonic() >= deadline:
                    raise self.transport_error(exc, f"GET /{path}") from None
                time.sleep(2.0)
            except httpx.HTTPError as exc:
                raise self.transport_error(exc, f"GET /{path}") from None
            finally:
                part.unlink(missing_ok=True)


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")
