"""The guards of ``ebook2audio serve``, each tried against a real server process (issue 18).

- a token set: every route (each path of ``/openapi.json`` with each method, the
  page, static files, ``/docs``, ``/openapi.json``, ``/healthz``, ``/v1/...``)
  answers 401 without it; the session cookie from ``POST /api/session`` works
  instead; the token and the cookie never reach the server's log;
- a host beyond loopback without a token: the server refuses to start (exit 2,
  one line);
- CSRF: unsafe requests need an ``Authorization`` header or ``X-CSRF-Token``
  equal to the ``e2a_csrf`` cookie, and a present ``Origin`` must be the server;
- the ``Host`` header (DNS rebinding): 400 unless loopback, bound or allowed;
- security headers on every response;
- an upload over the limit, streamed with no ``Content-Length``, is cut off (413)
  and nothing of it is kept (the folder's size watched while it streams);
- downloads: ``../``, ``%2e%2e``, absolute paths and another job's file: 404.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from serve_helpers import ROOT, ServerProcess, free_port

TOKEN = "tok-" + "7d1e2f" * 6
SAMPLE = ROOT / "examples" / "childrens-literature.epub"
LIMIT = 2 * 2**20  # the upload limit of these servers
HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}


def assert_secure_headers(r: httpx.Response) -> None:
    for name, value in HEADERS.items():
        assert r.headers.get(name) == value, (r.request.url, name, dict(r.headers))
    csp = r.headers.get("content-security-policy", "")
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, csp


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """A server with a token and an allowed reverse-proxy name."""
    root = tmp_path_factory.mktemp("serve-token")
    with ServerProcess(
        root / "data",
        "--n-workers",
        "1",
        "--allowed-host",
        "books.example.org",
        token=TOKEN,
        env={"DASK_EBOOK2AUDIO__SERVE__MAX_UPLOAD_SIZE": str(LIMIT)},
    ) as srv:  # stopped (SIGTERM, then SIGKILL) on the way out
        yield srv


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    """A loopback server without a token (the default), small limits."""
    root = tmp_path_factory.mktemp("serve-open")
    with ServerProcess(
        root / "data",
        "--n-workers",
        "1",
        env={
            "DASK_EBOOK2AUDIO__SERVE__MAX_UPLOAD_SIZE": str(LIMIT),
            "DASK_EBOOK2AUDIO__SERVE__MAX_PENDING_UPLOADS": "3",
            "EBOOK2AUDIO_TOKEN": "",
        },
    ) as srv:  # stopped (SIGTERM, then SIGKILL) on the way out
        yield srv


def routes(openapi: dict) -> list[tuple[str, str]]:
    """Every (method, path) of the description, path parameters filled in."""
    out = []
    for path, item in openapi["paths"].items():
        filled = re.sub(r"\{index\}", "0", re.sub(r"\{[a-z_]+\}", "x", path))
        for method in item:
            if method in ("get", "post", "put", "patch", "delete"):
                out.append((method.upper(), filled))
    return out


EXTRA = [
    ("GET", "/"),
    ("GET", "/index.html"),
    ("GET", "/static/app.js"),
    ("GET", "/static/app.css"),
    ("GET", "/static/nothing-here"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
    ("GET", "/healthz"),
    ("GET", "/v1/models"),
    ("POST", "/v1/audio/speech"),
    ("DELETE", "/api/session"),
    ("GET", "/no/such/route"),
    ("OPTIONS", "/api/jobs"),
    ("HEAD", "/"),
]


def test_every_route_needs_the_token(secured):
    with secured.client() as http:
        openapi = http.get("/openapi.json").json()
    found = routes(openapi)
    paths = {p for _, p in found}
    for must in ("/api/jobs", "/api/uploads", "/api/events", "/v1/audio/speech", "/healthz"):
        assert must in paths, paths
    tried = 0
    with httpx.Client(base_url=secured.url, timeout=30) as anonymous:
        for method, path in found + EXTRA:
            if (method, path) == ("POST", "/api/session"):
                continue  # the login itself: tried below
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                r = anonymous.request(method, path, headers=headers)
                assert r.status_code == 401, (method, path, headers, r.status_code, r.text)
                assert_secure_headers(r)
                tried += 1
            # a forged or stale session cookie is no session
            for cookie in ("x.y", "0" * 32 + "." + "0" * 64, TOKEN):
                r = anonymous.request(method, path, headers={"Cookie": f"e2a_session={cookie}"})
                assert r.status_code == 401, (method, path, cookie)
    assert tried > 3 * 20
    # with it, the same routes answer (whatever they answer, it is not 401)
    with secured.client() as http:
        for method, path in [("GET", "/"), ("GET", "/docs"), ("GET", "/api/jobs")]:
            assert http.request(method, path).status_code == 200
    # the token in a query string is not accepted
    r = httpx.get(f"{secured.url}/api/jobs", params={"token": TOKEN, "access_token": TOKEN})
    assert r.status_code == 401


def test_login_page_and_session_cookie(secured):
    with httpx.Client(base_url=secured.url, timeout=30) as browser:
        page = browser.get("/")
        assert page.status_code == 401 and page.headers["content-type"].startswith("text/html")
        assert '<form method="post" action="/api/session">' in page.text
        assert TOKEN not in page.text
        assert browser.post("/api/session", json={"token": "wrong"}).status_code == 401
        bad_form = browser.post("/api/session", data={"token": "wrong"})
        assert bad_form.status_code == 401 and "<form" in bad_form.text
        # the login form: a redirect to the page with the session cookie
        r = browser.post("/api/session", data={"token": TOKEN})
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("e2a_session=") and TOKEN not in cookie
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        # the cookie alone opens the API for reading...
        assert browser.get("/api/jobs").status_code == 200
        page = browser.get("/")
        assert page.status_code == 200
        meta = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
        assert meta and browser.cookies["e2a_csrf"] == meta.group(1)
        # ...and for writing with the CSRF token only
        body = {"books": [{"upload_id": "nope"}]}
        assert browser.post("/api/jobs", json=body).status_code == 403
        r = browser.post("/api/jobs", json=body, headers={"X-CSRF-Token": meta.group(1)})
        assert r.status_code == 422  # past every guard: the body is checked
        # signing out ends it
        assert browser.delete("/api/session", headers={"X-CSRF-Token": meta.group(1)}).is_success
        assert browser.get("/api/jobs").status_code == 401


def test_csrf(open_server):
    body = {"books": [{"upload_id": "nope"}]}
    with httpx.Client(base_url=open_server.url, timeout=30) as browser:
        assert browser.get("/api/jobs").status_code == 200  # loopback, no token: reads are open
        for method, path in [
            ("POST", "/api/jobs"),
            ("POST", "/api/uploads"),
            ("DELETE", "/api/jobs/x"),
            ("PATCH", "/api/jobs/x"),
            ("POST", "/api/jobs/x/cancel"),
            ("POST", "/api/preview"),
            ("DELETE", "/api/uploads/x"),
        ]:
            r = browser.request(method, path, json=body)
            assert r.status_code == 403 and "CSRF" in r.json()["detail"], (method, path)
            assert_secure_headers(r)
        csrf = browser.get("/api/csrf").json()["csrf"]
        assert browser.cookies["e2a_csrf"] == csrf
        wrong = browser.post("/api/jobs", json=body, headers={"X-CSRF-Token": csrf + "x"})
        assert wrong.status_code == 403
        ok = browser.post("/api/jobs", json=body, headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 422
        # a header without its cookie is not enough (another site cannot read the cookie)
        browser.cookies.clear()
        assert (
            browser.post("/api/jobs", json=body, headers={"X-CSRF-Token": csrf}).status_code == 403
        )
        # another Origin is refused even with the CSRF token and an Authorization header
        for origin in ("http://evil.example", "null", f"http://127.0.0.1:{free_port()}"):
            r = browser.post(
                "/api/jobs",
                json=body,
                headers={"Origin": origin, "Authorization": "Bearer x"},
            )
            assert r.status_code == 403 and "Origin" in r.json()["detail"], origin
        r = browser.post(
            "/api/jobs", json=body, headers={"Origin": open_server.url, "Authorization": "Bearer x"}
        )
        assert r.status_code == 422


def test_host_header(secured, open_server):
    for srv in (secured, open_server):
        for host in ("evil.example", "127.0.0.1.nip.io", "localhost.evil.example", "10.0.0.1"):
            r = httpx.get(f"{srv.url}/healthz", headers={"Host": host, **srv.headers})
            assert r.status_code == 400, (host, r.text)
            assert_secure_headers(r)
        for host in (f"127.0.0.1:{srv.port}", f"localhost:{srv.port}", "[::1]", "localhost"):
            r = httpx.get(f"{srv.url}/healthz", headers={"Host": host, **srv.headers})
            assert r.status_code == 200, host
    for host in ("books.example.org", "BOOKS.example.org:443"):
        r = httpx.get(f"{secured.url}/healthz", headers={"Host": host, **secured.headers})
        assert r.status_code == 200, host
    r = httpx.get(f"{open_server.url}/healthz", headers={"Host": "books.example.org"})
    assert r.status_code == 400


def test_security_headers_everywhere(open_server):
    with open_server.client() as http:
        http.headers["Authorization"] = "Bearer script"
        responses = [
            http.get("/"),
            http.get("/static/app.js"),
            http.get("/openapi.json"),
            http.get("/healthz"),
            http.get("/api/jobs/nope"),
            http.get("/no/such/route"),
            http.post("/api/jobs", json={"books": []}),
            http.get("/v1/models"),
        ]
        docs = http.get("/docs")
    for r in responses + [docs]:
        assert_secure_headers(r)
    for r in responses:
        if not r.request.url.path.startswith("/static/"):
            assert r.headers["cache-control"] == "no-store", r.request.url
    # Swagger UI loads from its CDN: its page alone allows it, its inline script by hash
    assert "https://cdn.jsdelivr.net" in docs.headers["content-security-policy"]
    assert "'unsafe-inline'" not in docs.headers["content-security-policy"]
    assert "cdn.jsdelivr.net" not in responses[0].headers["content-security-policy"]


def folder_size(folder: Path) -> int:
    total = 0
    for p in folder.iterdir() if folder.is_dir() else ():
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            pass
    return total


def test_upload_over_the_limit_is_cut_off(open_server):
    uploads = open_server.data / "uploads"
    before = sorted(p.name for p in uploads.iterdir()) if uploads.is_dir() else []
    peak = [0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], folder_size(uploads))
            time.sleep(0.005)

    sent = [0]

    def body():  # no Content-Length: chunked, 4 times the limit
        block = b"PK\x03\x04" + os.urandom(64 * 1024 - 4)
        while sent[0] < 4 * LIMIT:
            sent[0] += len(block)
            yield block
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with httpx.Client(base_url=open_server.url, timeout=60) as http:
            try:
                r = http.post(
                    "/api/uploads?filename=big.epub",
                    content=body(),
                    headers={"Authorization": "Bearer x"},
                )
            except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
                r = None  # the server answered and closed while the body was still going
    finally:
        stop.set()
        watcher.join()
    if r is not None:
        assert r.status_code == 413, r.text
        assert "max-upload-size" in r.json()["detail"]
        assert_secure_headers(r)
    assert 0 < peak[0] <= LIMIT, f"{peak[0]} bytes stored of a {LIMIT}-byte limit"
    assert sorted(p.name for p in uploads.iterdir()) == before  # nothing kept
    # a Content-Length over the limit is refused before the body is read
    r = httpx.post(
        f"{open_server.url}/api/uploads?filename=big.epub",
        content=b"x" * (LIMIT + 1),
        headers={"Authorization": "Bearer x"},
    )
    assert r.status_code == 413
    assert sorted(p.name for p in uploads.iterdir()) == before


def test_other_bodies_are_bounded(open_server):
    """Routes that read their body whole (JSON, /v1/audio/speech) get at most
    6 x speech-max-chars + 64 KiB: a larger body is 413, declared or chunked."""
    limit = 6 * 100_000 + 65536  # the shipped ebook2audio.serve.speech-max-chars
    auth = {"Authorization": "Bearer x", "Content-Type": "application/json"}
    with httpx.Client(base_url=open_server.url, timeout=60) as http:
        r = http.post("/v1/audio/speech", content=b" " * (limit + 1), headers=auth)
        assert r.status_code == 413, r.text
        assert_secure_headers(r)

        def chunked():  # no Content-Length
            for _ in range(2 * limit // 65536 + 1):
                yield b" " * 65536

        try:
            r = http.post("/api/jobs", content=chunked(), headers=auth)
            assert r.status_code == 413, r.text
        except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
            pass  # answered and closed while the body was still going
        # within the limit, the route reads it as before (a bad job: 422, not 413)
        r = http.post("/api/jobs", content=b'{"books": []}' + b" " * 1000, headers=auth)
        assert r.status_code == 422, r.text


def test_pending_upload_limit_and_generated_names(open_server):
    uploads = open_server.data / "uploads"
    auth = {"Authorization": "Bearer x"}
    with httpx.Client(base_url=open_server.url, timeout=60, headers=auth) as http:
        ids = []
        for name in ("../../../etc/cron.d/evil.epub", "/abs/path/book.epub", "a\x1b[31mb.txt"):
            r = http.post("/api/uploads", params={"filename": name}, content=b"Hello there.\n")
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
            assert "/" not in r.json()["name"] and "\x1b" not in r.json()["name"]
        r = http.post("/api/uploads", params={"filename": "one-more.txt"}, content=b"Hi.\n")
        assert r.status_code == 429 and "max-pending-uploads" in r.json()["detail"]
        stored = sorted(p.name for p in uploads.iterdir())
        assert all(re.fullmatch(r"[0-9a-f]{32}(\.[a-z0-9.]+)?", n) for n in stored), stored
        for upload_id in ids:
            assert http.delete(f"/api/uploads/{upload_id}").status_code == 204
    assert not (Path("/etc/cron.d") / "evil.epub").exists()


def test_downloads_only_a_jobs_own_recorded_files(open_server):
    auth = {"Authorization": "Bearer x"}
    with httpx.Client(base_url=open_server.url, timeout=120, headers=auth) as http:
        ups, jobs = [], []
        for chapters in ("2", "3"):  # two names: each job's files have their own names
            up = http.post(
                "/api/uploads",
                params={"filename": f"book-{chapters}.epub"},
                content=SAMPLE.read_bytes(),
            ).json()
            job = http.post(
                "/api/jobs",
                json={"books": [{"upload_id": up["id"], "chapters": chapters}],
                      "options": {"engine": "fake"}},
            ).json()  # fmt: skip
            ups.append(up["id"])
            jobs.append(job["id"])
        done = {}
        deadline = time.monotonic() + 240
        while len(done) < 2 and time.monotonic() < deadline:
            for job_id in jobs:
                job = http.get(f"/api/jobs/{job_id}").json()
                if job["state"] in ("done", "failed", "cancelled"):
                    done[job_id] = job
            time.sleep(0.5)
        a, b = (done[j] for j in jobs)
        assert not {f["name"] for f in a["books"][0]["files"]} & {
            f["name"] for f in b["books"][0]["files"]
        }
        assert a["state"] == b["state"] == "done", (a, b)
        name_a = next(f["name"] for f in a["books"][0]["files"] if f["kind"] == "audio")
        name_b = next(f["name"] for f in b["books"][0]["files"] if f["kind"] == "report")
        base = f"/api/jobs/{a['id']}/books/0/files/"
        assert http.get(base + name_a).status_code == 200
        data = open_server.data
        attempts = [
            base + "..%2F..%2F..%2Fqueue.sqlite3",
            base + "%2e%2e%2f%2e%2e%2fqueue.sqlite3",
            base + "%2E%2E",
            base + "..",
            base + "%2Fetc%2Fpasswd",
            base + "%2F" + str(data / "queue.sqlite3").lstrip("/").replace("/", "%2F"),
            base + name_b,  # another job's file
            base + name_a.replace(".m4b", ".report.json.bak"),
            f"/api/jobs/{a['id']}/books/1/files/{name_a}",
            f"/api/jobs/{a['id']}/books/-1/files/{name_a}",
            f"/api/jobs/{a['id']}%2F..%2F{b['id']}/books/0/files/{name_b}",
            f"/api/jobs/../jobs/{b['id']}/books/0/files/{name_a}",
            "/static/..%2F..%2Fserve%2Fsettings.py",
            "/static/%2e%2e/app.py",
            "/static/..%2Fapp.py",
        ]
        for path in attempts:
            r = http.send(
                http.build_request("GET", httpx.URL(open_server.url, raw_path=path.encode()))
            )
            assert r.status_code == 404, (path, r.status_code, r.text[:200])
            assert b"SQLite format" not in r.content and b"root:" not in r.content
        for job_id in jobs:
            assert http.delete(f"/api/jobs/{job_id}").status_code == 204
        for upload_id in ups:
            assert http.delete(f"/api/uploads/{upload_id}").status_code == 204


def test_beyond_loopback_without_a_token_refuses_to_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "EBOOK2AUDIO_TOKEN"}
    for host in ("0.0.0.0", "192.0.2.1"):
        proc = subprocess.run(
            [sys.executable, "-m", "ebook2audio_dask", "serve", "--host", host,
             "--port", str(free_port()), "--data", str(tmp_path / "data")],
            capture_output=True, text=True, timeout=120, env=env, cwd=str(ROOT),
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --host "), proc.stderr
        assert "token" in lines[0]
    assert not (tmp_path / "data" / "queue.sqlite3").exists()  # nothing started


def test_a_short_token_is_refused(tmp_path):
    """Wrong tokens are not rate-limited, so a guessable one is refused at the start."""
    from ebook2audio_dask.errors import UsageError
    from ebook2audio_dask.serve import ServeSettings

    with pytest.raises(UsageError, match=r"15 characters long: use at least 16"):
        ServeSettings.from_config(data=str(tmp_path / "d"), token="x" * 15)
    assert ServeSettings.from_config(data=str(tmp_path / "d"), token="x" * 16).token


def test_port_taken_is_one_line(tmp_path, open_server):
    proc = subprocess.run(
        [sys.executable, "-m", "ebook2audio_dask", "serve", "--port", str(open_server.port),
         "--data", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=120, cwd=str(ROOT),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "cannot listen" in proc.stderr


def test_cluster_that_cannot_start_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ebook2audio_dask", "serve", "--port", str(free_port()),
         "--data", str(tmp_path / "data"), "--cluster", "no-such-backend"],
        capture_output=True, text=True, timeout=120, cwd=str(ROOT),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: unknown cluster backend 'no-such-backend'")
    assert proc.stderr.strip().count("\n") == 0, proc.stderr


def test_token_and_cookies_never_logged(secured):
    with httpx.Client(base_url=secured.url, timeout=30) as browser:
        r = browser.post("/api/session", json={"token": TOKEN})
        session = browser.cookies["e2a_session"]
        browser.get("/api/jobs")
        browser.get("/api/jobs", params={"token": TOKEN})
        browser.get("/healthz", headers={"Authorization": "Bearer " + TOKEN + "x"})
        assert r.status_code == 200
    time.sleep(0.5)
    log = secured.log_path.read_text(errors="replace")
    assert "GET /api/jobs" in log  # the access log is on
    assert TOKEN not in log  # not even the one a client put in a query string
    assert session not in log and session.split(".")[1] not in log


def test_sigterm_stops_cleanly(tmp_path):
    srv = ServerProcess(tmp_path / "data", "--n-workers", "1")
    srv.start()
    try:
        assert srv.stop() == 0
    finally:
        srv.kill()
    assert "Traceback" not in srv.log()
    assert srv.log().count("serving on http://127.0.0.1:") == 1
