"""The FastAPI application of ``ebook2audio serve``: page, REST API, events, downloads.

:func:`create_app` builds it around a :class:`~.store.JobStore` (the SQLite
queue) and a :class:`~.runner.Runner` (the Dask client driving queued jobs);
its lifespan starts and stops the runner.  Every route sits behind
:class:`~.security.SecurityMiddleware` (Host check, token or session, CSRF,
security headers).  The routes, their bodies and responses are described by
``/openapi.json`` (Swagger UI at ``/docs``); see docs/serve.md.

Errors are JSON ``{"detail": "one line"}``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import json
import mimetypes
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Literal
from urllib.parse import parse_qs, quote

import anyio
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from .. import config
from ..errors import Ebook2AudioError, one_line
from . import speech
from .runner import Runner
from .security import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    SecurityMiddleware,
    login_page,
    new_csrf_token,
    new_session,
    token_matches,
)
from .settings import ServeSettings
from .store import FINAL_STATES, JobStore
from .uploads import UploadRefused, cover_path, receive_upload

__all__ = ["KEEPALIVE_S", "ChangeFeed", "EngineCatalog", "create_app"]

#: Seconds between keep-alive comments on an idle event stream.
KEEPALIVE_S = 15.0

_STATIC = resources.files("ebook2audio_dask.serve") / "static"
_CSRF_META = re.compile(r"<meta\s+name=\"csrf-token\"[^>]*>", re.IGNORECASE)
_HEAD = re.compile(r"<head[^>]*>", re.IGNORECASE)
#: Cover images served as they are (others are not served).
_COVER_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


# -- models (what /openapi.json describes) ------------------------------------------------


class Health(BaseModel):
    """``GET /healthz``."""

    ok: bool
    connected: bool


class Detail(BaseModel):
    """An error: one line."""

    detail: str


class SessionIn(BaseModel):
    """``POST /api/session`` as JSON."""

    token: str = Field(max_length=4096)


class SessionOut(BaseModel):
    """A session was opened (the ``e2a_session`` cookie is set) or closed."""

    ok: bool
    token_required: bool


class Csrf(BaseModel):
    """``GET /api/csrf``: the value to send as ``X-CSRF-Token`` (also the cookie ``e2a_csrf``)."""

    csrf: str


class Upload(BaseModel):
    """An uploaded book: its display name, size, what was read of it (or why not)."""

    model_config = ConfigDict(extra="allow")

    id: str
    name: str
    size: int
    summary: dict[str, Any] | None = None
    error: str | None = None
    cover_url: str | None = None
    job_id: str | None = None


class Engines(BaseModel):
    """``GET /api/engines``: every engine (what ``ebook2audio engines --json`` shows),
    available ones first."""

    engines: list[dict[str, Any]]


class Cluster(BaseModel):
    """``GET /api/cluster``."""

    connected: bool
    dashboard: str | None
    scheduler: str | None
    workers: int


class JobOptions(BaseModel):
    """A job's options: the conversion options a client may set.  Server paths (model,
    cache, lexicons, storage) are not among them: the server's configuration sets those."""

    model_config = ConfigDict(extra="forbid")

    engine: str | None = Field(None, max_length=100)
    voice: str | None = Field(None, max_length=500)
    language: str | None = Field(None, max_length=35)
    format: Literal["m4b", "mp3", "opus", "flac", "wav"] | None = None
    split: Literal["none", "chapters"] | None = None
    split_hours: float | None = Field(None, gt=0, le=1000)
    subtitles: Literal["none", "srt", "vtt"] | None = None
    layout: Literal["flat", "audiobookshelf"] | None = None
    loudnorm: bool | None = None
    readalong: bool | None = None
    normalize: bool | None = None
    include_matter: bool | None = None
    allow_gaps: bool | None = None
    retries: int | None = Field(None, ge=0, le=100)
    settings: dict[str, str | int | float | bool] | None = None
    pauses: dict[str, float] | None = None


class BookIn(BaseModel):
    """One book of a new job: an upload, and the chapters to convert (``"2-3"``; all when null)."""

    model_config = ConfigDict(extra="forbid")

    upload_id: str = Field(max_length=100)
    chapters: str | None = Field(None, max_length=1000)


class JobIn(BaseModel):
    """``POST /api/jobs``: the books (or just upload ids), the options, the priority."""

    model_config = ConfigDict(extra="forbid")

    books: list[BookIn] | None = None
    uploads: list[str] | None = None
    options: JobOptions = Field(default_factory=JobOptions)
    priority: int = Field(0, ge=-1_000_000, le=1_000_000)


class PreviewIn(BaseModel):
    """``POST /api/preview``: an upload (its first paragraph) or a text, an engine and voice."""

    model_config = ConfigDict(extra="forbid")

    upload_id: str | None = Field(None, max_length=100)
    text: str | None = Field(None, max_length=10_000)
    engine: str | None = Field(None, max_length=100)
    voice: str | None = Field(None, max_length=500)


class PriorityIn(BaseModel):
    """``PATCH /api/jobs/{id}``."""

    model_config = ConfigDict(extra="forbid")

    priority: int = Field(ge=-1_000_000, le=1_000_000)


class OutputFile(BaseModel):
    """One output file of a book (download it by *name*)."""

    model_config = ConfigDict(extra="allow")

    name: str
    kind: str
    size: int | None = None


class JobBook(BaseModel):
    """One book of a job, its state and progress."""

    model_config = ConfigDict(extra="allow")

    index: int
    upload_id: str | None = None
    name: str | None = None
    title: str | None = None
    chapters: str | None = None
    state: str
    chunks_done: int = 0
    chunks_total: int = 0
    chunks_from_cache: int = 0
    eta_s: float | None = None
    error: str | None = None
    exit_code: int | None = None
    files: list[OutputFile] = []


class Progress(BaseModel):
    """A job's progress over all its books."""

    model_config = ConfigDict(extra="allow")

    chunks_done: int = 0
    chunks_total: int = 0
    fraction: float = 0.0
    eta_s: float | None = None


class Job(BaseModel):
    """A job: its books, options, state (queued, running, waiting, cancelling, done, failed,
    cancelled), place in the queue and progress."""

    model_config = ConfigDict(extra="allow")

    id: str
    created: Any = None
    updated: Any = None
    state: str
    priority: int
    options: dict[str, Any]
    output: str | None = None
    error: str | None = None
    position: int | None = None
    progress: Progress
    books: list[JobBook]


class Jobs(BaseModel):
    """``GET /api/jobs``: every job, in queue order."""

    jobs: list[Job]


# -- helpers ------------------------------------------------------------------------------


class ChangeFeed:
    """One thread waiting on :meth:`JobStore.wait_change`, waking every event stream.

    Parameters
    ----------
    store : JobStore
        The queue whose ``version`` it follows.
    """

    def __init__(self, store: Any):
        self.store = store
        self.version = store.version
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Set when the server shuts down: every event stream ends (uvicorn waits for them).
        self.closing = False

    def start(self) -> None:
        """Start following the store (call from the event loop)."""
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._thread = threading.Thread(target=self._follow, name="e2a-change-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (it notices within a second)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _follow(self) -> None:
        version = self.version
        while not self._stop.is_set():
            try:
                version = self.store.wait_change(version, 1.0)
            except Exception:  # noqa: BLE001 - a closed store at shutdown: stop
                return
            if version != self.version and self._loop is not None:
                self.version = version
                with contextlib.suppress(RuntimeError):  # the loop closed
                    self._loop.call_soon_threadsafe(self._wake)

    def close_streams(self) -> None:
        """End every event stream now (call from the event loop, as the server stops)."""
        self.closing = True
        self._wake()

    def _wake(self) -> None:
        event, self._event = self._event, asyncio.Event()
        if event is not None:
            event.set()

    async def wait(self, version: int, timeout: float) -> int:
        """The store's version once it differs from *version*, or after *timeout* seconds."""
        if self.version != version or self._event is None:
            return self.version
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        return self.version


class EngineCatalog:
    """Every engine's :func:`~ebook2audio_dask.engines.engine_info`, read once (in a thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._infos: dict[str, dict[str, Any]] = {}
        self._all: list[dict[str, Any]] | None = None

    def info(self, name: str) -> dict[str, Any]:
        """Engine *name*'s info (blocking; cached)."""
        from ..engines import engine_info

        with self._lock:
            if name not in self._infos:
                self._infos[name] = engine_info(name)
            return self._infos[name]

    def all(self) -> list[dict[str, Any]]:
        """Every engine's info, available ones first (blocking; cached)."""
        from ..engines import engine_names

        if self._all is None:
            infos = [self.info(name) for name in engine_names()]
            self._all = sorted(infos, key=lambda i: not i["available"])
        return self._all


def _one_line(exc: BaseException) -> str:
    return one_line(exc) or type(exc).__name__


def _upload_out(record: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in record.items() if k != "path"}  # a server path: not shown
    has_cover = (record.get("summary") or {}).get("cover") in _COVER_TYPES
    out["cover_url"] = f"/api/uploads/{record['id']}/cover" if has_cover else None
    return out


def _not_found(what: str) -> HTTPException:
    return HTTPException(404, f"no such {what}")


def _chapter_count(summary: dict[str, Any] | None, include_matter: bool) -> int | None:
    if not summary:
        return None
    return len(summary.get("listing" if include_matter else "chapters") or [])


def _check_chapters(index: int, text: str | None, summary, include_matter: bool) -> None:
    """``chapters`` parsed by ``--chapters``'s own parser; numbers within the book's count."""
    from ..pipeline.options import parse_chapters

    try:
        parsed = parse_chapters(text)
    except Exception as exc:  # noqa: BLE001 - UsageError: its line
        raise HTTPException(422, f"books[{index}].chapters: {_one_line(exc)}") from None
    count = _chapter_count(summary, include_matter)
    if not parsed or count is None:
        return
    for item in parsed:
        top = item[-1] if isinstance(item, range) else item
        if isinstance(top, int) and top > count:
            raise HTTPException(
                422, f"books[{index}].chapters: chapter {top} does not exist (the book has {count})"
            )


def _check_options(settings: ServeSettings, catalog: EngineCatalog, given: dict) -> None:
    """The whitelisted options checked as ``convert`` checks them (blocking: engine infos).

    Raises
    ------
    HTTPException
        422 with the one-line reason.
    """
    from ..engines import get_engine_class
    from ..pipeline.options import split_options

    try:
        opts, _ = split_options(settings.output, given, caller="job")
        opts.output_spec()
    except Exception as exc:  # noqa: BLE001 - TypeError / UsageError: one line
        raise HTTPException(422, f"options: {_one_line(exc)}") from None
    engine = given.get("engine") or config.get("engine")
    if engine:
        info = catalog.info(engine)
        if not info["available"]:
            why = f": {info['why']}" if info.get("why") else ""
            raise HTTPException(422, f"options.engine: {engine} is not available here{why}")
        try:
            cls = get_engine_class(engine)
            cls.runtime_options()
        except Exception as exc:  # noqa: BLE001 - e.g. a server engine with no endpoint
            raise HTTPException(422, f"options.engine: {_one_line(exc)}") from None
        known = getattr(cls, "setting_names", None)
        unknown = sorted(set(given.get("settings") or ()) - set(known or ()))
        if known is not None and unknown:
            raise HTTPException(
                422,
                f"options.settings: unknown {engine} setting(s) {', '.join(unknown)}: "
                f"supported are {', '.join(known)}",
            )
    voice = given.get("voice")
    if voice:
        if not engine:
            raise HTTPException(422, "options.voice: give options.engine with a voice")
        ids = [v["id"] for v in catalog.info(engine)["voices"]]
        if voice not in ids:
            raise HTTPException(
                422, f"options.voice: {voice!r} is not one of engine {engine}'s voices"
            )


def _stream_file(url: str, storage_options: dict[str, Any] | None) -> Iterator[bytes]:
    from ..storage import open_url

    with open_url(url, "rb", storage_options) as f:
        while block := f.read(1 << 20):
            yield block


def _attachment(name: str) -> str:
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"


#: Finished jobs listed by ``GET /api/jobs`` and the queue's events unless asked otherwise.
FINISHED_SHOWN = 100


async def _io(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking call (the store's SQLite under its lock...) in a worker thread, so a
    write holding the store never stalls the event loop."""
    return await anyio.to_thread.run_sync(fn, *args)


class QueueSnapshots:
    """The queue's JSON, made once per store version and shared by every ``GET /api/jobs``
    and queue event stream (50 clients polling cost one listing per change, not 50).

    Parameters
    ----------
    store : JobStore
        The queue.
    """

    def __init__(self, store: Any):
        self.store = store
        self._cached: tuple[int, int, dict[str, Any], bytes] | None = None
        self._lock = asyncio.Lock()

    async def get(self, finished: int) -> tuple[dict[str, Any], bytes]:
        """``({"jobs": [...]}, its JSON)`` as of the store's current version or later."""
        version = self.store.version
        cached = self._cached
        if cached is not None and cached[:2] == (version, finished):
            return cached[2], cached[3]
        async with self._lock:  # one listing at a time; those who waited take it
            cached = self._cached
            if cached is not None and cached[0] >= version and cached[1] == finished:
                return cached[2], cached[3]
            version = self.store.version  # read before the listing: never newer than it

            def listing() -> tuple[dict[str, Any], bytes]:
                value = {"jobs": self.store.list_jobs(finished)}
                return value, json.dumps(value, separators=(",", ":")).encode()

            value, body = await _io(listing)
            if finished == FINISHED_SHOWN:
                self._cached = (version, finished, value, body)
            return value, body


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _swagger(openapi_url: str) -> tuple[bytes, str]:
    """Swagger UI's page (its assets from the jsDelivr CDN) and the CSP that lets it run:
    its inline script allowed by hash, nothing else inline."""
    page = get_swagger_ui_html(openapi_url=openapi_url, title="ebook2audio API").body
    scripts = re.findall(rb"<script>(.*?)</script>", page, re.DOTALL)
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s).digest()).decode() + "'" for s in scripts
    )
    cdn = "https://cdn.jsdelivr.net"
    csp = (
        f"default-src 'self'; script-src 'self' {cdn} {hashes}; style-src 'self' {cdn}; "
        f"img-src 'self' data: https://fastapi.tiangolo.com; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )
    return page, csp


# -- the application ----------------------------------------------------------------------


def create_app(settings: ServeSettings, *, store: Any = None, runner: Any = None) -> FastAPI:
    """The ``ebook2audio serve`` application.

    Parameters
    ----------
    settings : ServeSettings
        Where the data lives, limits, token, cluster.
    store : JobStore, optional
        The queue (default: ``settings.queue_path``).
    runner : Runner, optional
        What converts the queued jobs (default: a :class:`~.runner.Runner` on
        *store*); started and stopped by the app's lifespan.

    Returns
    -------
    fastapi.FastAPI
        With ``app.state.settings``, ``.store``, ``.runner``, ``.engines``
        (:class:`EngineCatalog`) and ``.changes`` (:class:`ChangeFeed`).
    """
    if store is None:
        settings.data.mkdir(parents=True, exist_ok=True)
        store = JobStore(settings.queue_path)
    if runner is None:
        runner = Runner(store, settings)
    catalog = EngineCatalog()
    changes = ChangeFeed(store)
    snapshots = QueueSnapshots(store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.uploads_dir.mkdir(parents=True, exist_ok=True)
        changes.start()
        try:
            await anyio.to_thread.run_sync(runner.start)
        except BaseException as exc:
            app.state.startup_error = exc  # what `ebook2audio serve` reports
            changes.stop()
            raise
        threading.Thread(target=catalog.all, name="e2a-engines", daemon=True).start()
        try:
            yield
        finally:
            changes.stop()
            await anyio.to_thread.run_sync(runner.stop)

    app = FastAPI(
        title="ebook2audio",
        summary="Ebooks to audiobooks on a Dask cluster: uploads, a job queue, downloads, "
        "and an OpenAI-compatible speech endpoint.",
        version=_version(),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.runner = runner
    app.state.engines = catalog
    app.state.changes = changes
    app.state.startup_error = None

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if errors:
            first = errors[0]
            where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
            text = f"{where}: {first.get('msg', 'invalid')}" if where else first.get("msg", "")
        else:
            text = "invalid request"
        return JSONResponse({"detail": one_line(text, 300)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return JSONResponse(
            {"detail": one_line(detail, 500)}, status_code=exc.status_code, headers=exc.headers
        )

    invalid: dict[int | str, dict[str, Any]] = {
        400: {"model": Detail, "description": "A body that is not JSON"},
        422: {"model": Detail},
    }
    errors: dict[int | str, dict[str, Any]] = {404: {"model": Detail}, **invalid}

    # -- page, docs, health -----------------------------------------------------------------

    @app.get("/healthz", response_model=Health, tags=["server"], summary="Liveness")
    async def healthz() -> dict[str, Any]:
        """The server answers; *connected*: its Dask client is connected."""
        return {"ok": True, "connected": bool(getattr(runner, "connected", False))}

    @app.get("/", response_class=HTMLResponse, tags=["page"], summary="The web page")
    async def page(request: Request) -> Response:
        """The page (``serve/static/index.html``) with this browser's CSRF token."""
        csrf = request.cookies.get(CSRF_COOKIE) or new_csrf_token()
        try:
            text = (_STATIC / "index.html").read_text(encoding="utf-8")
        except OSError:
            text = (
                "<!DOCTYPE html><html><head><title>ebook2audio</title></head><body></body></html>"
            )
        meta = f'<meta name="csrf-token" content="{csrf}">'
        text, found = _CSRF_META.subn(lambda _: meta, text, count=1)
        if not found:
            text = _HEAD.sub(lambda m: m.group(0) + meta, text, count=1)
        response = HTMLResponse(text)
        _set_csrf_cookie(response, csrf)
        return response

    swagger_page, swagger_csp = _swagger(app.openapi_url or "/openapi.json")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return HTMLResponse(swagger_page, headers={"Content-Security-Policy": swagger_csp})

    app.mount("/static", StaticFiles(directory=str(_STATIC), check_dir=False), name="static")

    # -- session ----------------------------------------------------------------------------

    session = APIRouter(prefix="/api", tags=["session"], responses=invalid)

    @session.post(
        "/session",
        response_model=SessionOut,
        summary="Sign in",
        responses={
            303: {"description": "The sign-in form: to the page, with the session cookie"},
            413: {"model": Detail, "description": "A body over 8 KiB"},
            401: {
                "model": Detail,
                "description": "Wrong token (the form: the sign-in page again)",
                "content": {"text/html": {"schema": {"type": "string"}}},
            },
        },
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {"schema": SessionIn.model_json_schema()},
                    "application/x-www-form-urlencoded": {"schema": SessionIn.model_json_schema()},
                }
            }
        },
    )
    async def open_session(request: Request) -> Response:
        """Check the token (JSON ``{"token"}`` or the login form) and set the session
        cookie ``e2a_session`` (HttpOnly, SameSite=Strict).  A form gets a redirect to
        the page."""
        body = await request.body()
        if len(body) > 8192:
            raise HTTPException(413, "request too large")
        is_form = request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        )
        if is_form:
            given = (parse_qs(body.decode("utf-8", "replace")).get("token") or [""])[0]
        else:
            try:
                given = SessionIn.model_validate_json(body or b"{}").token
            except ValueError:
                raise HTTPException(422, 'body: give {"token": "..."}') from None
        if not settings.token:
            response: Response = JSONResponse({"ok": True, "token_required": False})
            return response
        if not token_matches(given.strip(), settings.token):
            if is_form:
                return HTMLResponse(login_page("That token is not this server's."), 401)
            raise HTTPException(401, "wrong token", headers={"WWW-Authenticate": "Bearer"})
        if is_form:
            response = Response(status_code=303, headers={"Location": "/"})
        else:
            response = JSONResponse({"ok": True, "token_required": True})
        response.set_cookie(
            SESSION_COOKIE,
            new_session(settings.token),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    @session.delete("/session", response_model=SessionOut, summary="Sign out")
    async def close_session() -> Response:
        """Clear the session cookie."""
        response = JSONResponse({"ok": True, "token_required": bool(settings.token)})
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    @session.get("/csrf", response_model=Csrf, summary="CSRF token")
    async def csrf(request: Request) -> Response:
        """The CSRF token to send as ``X-CSRF-Token`` with unsafe requests (also set as
        cookie ``e2a_csrf``); not needed with an ``Authorization`` header."""
        value = request.cookies.get(CSRF_COOKIE) or new_csrf_token()
        response = JSONResponse({"csrf": value})
        _set_csrf_cookie(response, value)
        return response

    def _set_csrf_cookie(response: Response, value: str) -> None:
        response.set_cookie(CSRF_COOKIE, value, httponly=False, samesite="strict", path="/")

    app.include_router(session)

    # -- uploads ----------------------------------------------------------------------------

    uploads = APIRouter(prefix="/api/uploads", tags=["uploads"], responses=invalid)

    @uploads.post(
        "",
        status_code=201,
        response_model=Upload,
        summary="Upload a book",
        responses={
            413: {"model": Detail},
            429: {"model": Detail},
            400: {"model": Detail},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        },
    )
    async def upload(
        request: Request,
        filename: str | None = Query(None, max_length=1000, description="The book's file name"),
    ) -> dict[str, Any]:
        """The request body is the book file, streamed to disk under a generated name (the
        file name is only shown).  Over ``max-upload-size``: 413 and nothing kept.  A book
        that cannot be read is kept with its ``error``: its job fails that book only."""
        try:
            record = await receive_upload(request, settings, store, filename)
        except UploadRefused as exc:
            raise HTTPException(exc.status, exc.detail) from None
        return _upload_out(record)

    @uploads.get("/{upload_id}", response_model=Upload, summary="An upload", responses=errors)
    async def get_upload(upload_id: str) -> dict[str, Any]:
        """An upload's name, size, summary (title, chapters, skipped matter) or error."""
        record = await _io(store.get_upload, upload_id)
        if record is None:
            raise _not_found("upload")
        return _upload_out(record)

    @uploads.get(
        "/{upload_id}/cover",
        summary="An upload's cover image",
        response_class=Response,
        responses={200: {"content": {"image/*": {}}}, 404: {"model": Detail}},
    )
    async def get_cover(upload_id: str) -> Response:
        """The cover image the book holds (404 when it has none)."""
        record = await _io(store.get_upload, upload_id)
        media = ((record or {}).get("summary") or {}).get("cover")
        if record is None or media not in _COVER_TYPES:  # never an SVG (it may hold script)
            raise _not_found("cover")
        try:
            data = await anyio.to_thread.run_sync(cover_path(record["path"]).read_bytes)
        except OSError:
            raise _not_found("cover") from None
        return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=3600"})

    @uploads.delete(
        "/{upload_id}",
        status_code=204,
        summary="Delete an upload",
        responses={**errors, 409: {"model": Detail}},
    )
    async def delete_upload(upload_id: str) -> Response:
        """Delete an upload no job uses (409 when one does)."""
        record = await _io(store.get_upload, upload_id)
        if record is None:
            raise _not_found("upload")
        if not await _io(store.delete_upload, upload_id):
            raise HTTPException(409, "a job uses this upload")
        for path in (record["path"], cover_path(record["path"])):
            await anyio.to_thread.run_sync(_unlink, str(path))
        return Response(status_code=204)

    app.include_router(uploads)

    # -- engines, cluster -------------------------------------------------------------------

    @app.get("/api/engines", response_model=Engines, tags=["engines"], summary="Engines, voices")
    async def engines() -> dict[str, Any]:
        """Every engine with its voices and languages, available ones first."""
        return {"engines": await anyio.to_thread.run_sync(catalog.all)}

    @app.get("/api/cluster", response_model=Cluster, tags=["engines"], summary="The cluster")
    async def cluster() -> dict[str, Any]:
        """Whether the server's Dask client is connected, its dashboard and workers."""
        return await anyio.to_thread.run_sync(_cluster_info, runner)

    @app.post(
        "/api/preview",
        tags=["engines"],
        summary="Voice preview",
        response_class=Response,
        responses={
            200: {"content": {"audio/wav": {}}},
            **errors,
            503: {"model": Detail},
        },
    )
    async def preview(body: PreviewIn) -> Response:
        """A few seconds of speech (WAV): the start of an upload's first chapter, or *text*,
        in *engine*'s *voice*, spoken on the cluster."""
        if body.upload_id is not None:
            source: Any = await _io(store.get_upload, body.upload_id)
            if source is None:
                raise _not_found("upload")
        elif body.text and body.text.strip():
            source = body.text
        else:
            raise HTTPException(422, "give upload_id or text")
        given = {k: v for k, v in (("engine", body.engine), ("voice", body.voice)) if v}
        await anyio.to_thread.run_sync(_check_options, settings, catalog, given)
        client = getattr(runner, "client", None)
        if client is None:
            raise HTTPException(503, "not connected to the cluster yet; try again")
        try:
            wav = await anyio.to_thread.run_sync(
                speech.preview, client, source, body.engine, body.voice, settings
            )
        except Ebook2AudioError as exc:
            raise HTTPException(422, _one_line(exc)) from None
        return Response(wav, media_type="audio/wav")

    # -- jobs -------------------------------------------------------------------------------

    jobs = APIRouter(prefix="/api/jobs", tags=["jobs"], responses=invalid)

    @jobs.post(
        "",
        status_code=201,
        response_model=Job,
        summary="Create a job",
    )
    async def create_job(body: JobIn) -> dict[str, Any]:
        """Queue the books (uploads) with the options.  Options are checked as ``convert``
        checks them; a voice must be one of the engine's; chapters as ``--chapters`` takes
        them.  422 with the reason otherwise."""
        books = [b.model_dump() for b in body.books or []]
        books += [{"upload_id": u, "chapters": None} for u in body.uploads or []]
        if not books:
            raise HTTPException(422, "books: give at least one upload")
        if len(books) > settings.max_books_per_job:
            raise HTTPException(
                422,
                f"books: at most {settings.max_books_per_job} books per job "
                "(ebook2audio.serve.max-books-per-job)",
            )
        given = body.options.model_dump(exclude_none=True)
        include_matter = given.get("include_matter")
        if include_matter is None:
            include_matter = bool(config.get("include-matter"))
        first: dict[str, int] = {}
        for i, book in enumerate(books):
            j = first.setdefault(book["upload_id"], i)
            if j != i:  # its outputs would have the same names as the first's
                raise HTTPException(
                    422,
                    f"books[{i}].upload_id: the same upload as books[{j}]: give it a job "
                    "of its own, or upload it again",
                )
            record = await _io(store.get_upload, book["upload_id"])
            if record is None:
                raise HTTPException(422, f"books[{i}].upload_id: no such upload")
            _check_chapters(i, book["chapters"], record.get("summary"), include_matter)
        await anyio.to_thread.run_sync(_check_options, settings, catalog, given)
        job = await _io(
            functools.partial(store.create_job, books=books, options=given,
                              priority=body.priority, output=settings.output)
        )  # fmt: skip
        runner.wake()
        return job

    @jobs.get("", response_model=Jobs, summary="The queue")
    async def list_jobs(
        finished: int = Query(
            FINISHED_SHOWN, ge=0, le=100_000, description="How many finished jobs (newest first)"
        ),
    ) -> Response:
        """Every job that is not finished: running, waiting, queued (by priority); then the
        newest *finished* finished ones."""
        _, body = await snapshots.get(finished)
        return Response(body, media_type="application/json")

    @jobs.get("/{job_id}", response_model=Job, summary="A job", responses=errors)
    async def get_job(job_id: str) -> dict[str, Any]:
        """A job's state, books, progress and output files."""
        job = await _io(store.get_job, job_id)
        if job is None:
            raise _not_found("job")
        return job

    @jobs.patch("/{job_id}", response_model=Job, summary="Reprioritise a job", responses=errors)
    async def patch_job(job_id: str, body: PriorityIn) -> dict[str, Any]:
        """Set a job's priority (higher runs first)."""
        job = await _io(store.set_priority, job_id, body.priority)
        if job is None:
            raise _not_found("job")
        runner.wake()
        return job

    @jobs.post("/{job_id}/cancel", response_model=Job, summary="Cancel a job", responses=errors)
    async def cancel_job(job_id: str) -> dict[str, Any]:
        """Cancel a job: a queued one at once, a running one as soon as its tasks stop."""
        if await _io(store.get_job, job_id) is None:
            raise _not_found("job")
        await anyio.to_thread.run_sync(runner.cancel, job_id)
        job = await _io(store.get_job, job_id)
        if job is None:
            raise _not_found("job")
        return job

    @jobs.post("/{job_id}/retry", response_model=Job, summary="Retry a job", responses=errors)
    async def retry_job(job_id: str) -> dict[str, Any]:
        """Queue a job's failed and cancelled books again (they resume from the chunk store)."""
        job = await _io(store.retry, job_id)
        if job is None:
            raise _not_found("job")
        runner.wake()
        return job

    @jobs.delete(
        "/{job_id}",
        status_code=204,
        summary="Delete a job",
        responses={**errors, 409: {"model": Detail}},
    )
    async def delete_job(job_id: str) -> Response:
        """Forget a finished job and delete its outputs (409 while it is queued or running:
        cancel it first)."""
        if await _io(store.get_job, job_id) is None:
            raise _not_found("job")
        deleted = await anyio.to_thread.run_sync(runner.delete_job, job_id)
        if not deleted:
            raise HTTPException(409, "the job is not finished: cancel it first")
        return Response(status_code=204)

    @jobs.get(
        "/{job_id}/books/{index}/files/{name}",
        summary="Download an output file",
        response_class=StreamingResponse,
        responses={200: {"content": {"application/octet-stream": {}}}, 404: {"model": Detail}},
    )
    async def download(job_id: str, index: int, name: str) -> Response:
        """A file the book's conversion wrote (its audio, report, subtitles, failures): only
        names listed in the book's ``files``."""
        job = await _io(store.get_job, job_id)
        if job is None or not 0 <= index < len(job["books"]):
            raise _not_found("file")
        files = {f["name"]: f for f in job["books"][index].get("files") or []}
        if name not in files:
            raise _not_found("file")
        url = runner.file_path(job_id, index, name)
        if not url:
            raise _not_found("file")
        media = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if name.endswith(".m4b"):
            media = "audio/mp4"
        elif name.endswith(".vtt"):
            media = "text/vtt; charset=utf-8"
        elif name.endswith(".srt"):
            media = "application/x-subrip"
        headers = {"Content-Disposition": _attachment(name)}
        size = files[name].get("size")
        if isinstance(size, int) and size >= 0:
            headers["Content-Length"] = str(size)
        try:
            stream = _stream_file(url, settings.storage_options)
            first = await anyio.to_thread.run_sync(next, stream, b"")
        except OSError:
            raise _not_found("file") from None

        async def body() -> AsyncIterator[bytes]:
            try:
                if first:
                    yield first
                while True:
                    block = await anyio.to_thread.run_sync(next, stream, b"")
                    if not block:
                        break
                    yield block
            finally:  # also when the client went away: the file is closed now
                stream.close()

        return StreamingResponse(body(), media_type=media, headers=headers)

    app.include_router(jobs)

    # -- events -----------------------------------------------------------------------------

    sse = {200: {"content": {"text/event-stream": {}}}}

    @app.get(
        "/api/events",
        tags=["jobs"],
        summary="Queue events",
        response_class=StreamingResponse,
        responses=sse,
    )
    async def queue_events(request: Request) -> StreamingResponse:
        """Server-sent events: ``event: jobs`` with ``{"jobs": [...]}`` at once and on every
        change; a keep-alive comment every 15 s."""

        async def jobs() -> dict[str, Any]:
            value, _ = await snapshots.get(FINISHED_SHOWN)
            return value

        return _event_stream(_changes_as_events(request, changes, "jobs", jobs))

    @app.get(
        "/api/jobs/{job_id}/events",
        tags=["jobs"],
        summary="A job's events",
        response_class=StreamingResponse,
        responses={**sse, **errors},
    )
    async def job_events(request: Request, job_id: str) -> StreamingResponse:
        """Server-sent events: ``event: job`` with the job at once and on every change;
        the stream ends after a final state (done, failed, cancelled)."""
        if await _io(store.get_job, job_id) is None:
            raise _not_found("job")

        async def job() -> dict[str, Any] | None:
            return await anyio.to_thread.run_sync(store.get_job, job_id)

        return _event_stream(_changes_as_events(request, changes, "job", job))

    # -- the OpenAI-compatible speech endpoint (serve/speech.py) ----------------------------
    app.include_router(speech.router)

    # The guard goes outside everything, Starlette's error handler included, so a 500
    # gets the security headers too.
    build_stack = app.build_middleware_stack
    app.build_middleware_stack = lambda: SecurityMiddleware(build_stack(), settings)
    return app


async def _changes_as_events(
    request: Request, changes: ChangeFeed, event: str, read: Callable[[], Awaitable[Any]]
) -> AsyncIterator[str]:
    """Server-sent events: *read*'s value as ``event: <event>`` at once and whenever it
    differs after a change of the store; ``: keep-alive`` after 15 quiet seconds.  Ends
    when the client goes away, when *read* gives None, or after a job's final state."""
    last: Any = None
    sent = time.monotonic()
    while not changes.closing and not await request.is_disconnected():
        version = changes.version
        value = await read()
        if value is None:
            return
        if value != last:
            last = value
            sent = time.monotonic()
            yield _sse(event, value)
        elif time.monotonic() - sent >= KEEPALIVE_S:
            sent = time.monotonic()
            yield ": keep-alive\n\n"
        if event == "job" and value["state"] in FINAL_STATES:
            return
        quiet = time.monotonic() - sent
        if not changes.closing:
            await changes.wait(version, max(0.05, KEEPALIVE_S - quiet))


def _event_stream(body: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _unlink(path: str) -> None:
    import os

    with contextlib.suppress(OSError):
        os.unlink(path)


def _cluster_info(runner: Any) -> dict[str, Any]:
    client = getattr(runner, "client", None)
    out = {
        "connected": bool(getattr(runner, "connected", False)),
        "dashboard": getattr(runner, "dashboard_link", None),
        "scheduler": None,
        "workers": 0,
    }
    if client is not None:
        with contextlib.suppress(Exception):
            out["scheduler"] = client.scheduler.address
        with contextlib.suppress(Exception):
            out["workers"] = len(client.scheduler_info().get("workers", {}))
    return out


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ebook2audio_dask")
    except PackageNotFoundError:
        return "0"
