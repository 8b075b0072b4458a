"""The REST API of ``ebook2audio serve`` against a real server process (issue 18).

One server per module (``tests/serve_helpers.ServerProcess``: ``python -m
ebook2audio_dask serve`` on a free loopback port, one embedded worker), driven
with httpx as a script would: upload the sample book, read its summary and
cover, queue chapters 2-3 with espeak, follow the job's server-sent events to
the end, download the M4B (checked against its report as ``convert``'s
outputs are), the report and the subtitles.  Hostile uploads (a zip bomb, DRM,
an XXE, ``../`` member names) are stored and flagged, and fail only their own
book of a job whose good book still finishes.
"""

from __future__ import annotations

import json
import time
import wave
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from helpers import check_m4b_against_report
from serve_helpers import ServerProcess
from test_hostile import (
    DOTDOT_NAMES,
    SECRET,
    build_dotdot_names,
    build_drm,
    build_xxe_epub3,
    build_zip_bomb,
)

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "childrens-literature.epub"
#: What a script sends on a server without a token: any Authorization header passes the
#: CSRF check (a browser never adds one to a cross-site request).
SCRIPT = {"Authorization": "Bearer script"}
FINAL = {"done", "failed", "cancelled"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-api")
    with ServerProcess(
        root / "data",
        "--n-workers",
        "1",
        env={
            "DASK_EBOOK2AUDIO__SERVE__MAX_BOOKS_PER_JOB": "5",
            "DASK_EBOOK2AUDIO__SERVE__JOBS_IN_FLIGHT": "1",
        },
    ) as srv:  # stopped (SIGTERM, then SIGKILL) on the way out
        yield srv


@pytest.fixture(scope="module")
def http(server):
    with server.client(timeout=120) as client:
        client.headers.update(SCRIPT)
        yield client


def upload(http: httpx.Client, path: Path, name: str | None = None) -> dict:
    r = http.post(
        "/api/uploads",
        params={"filename": name or path.name},
        content=path.read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text
    return r.json()


def follow(http: httpx.Client, job_id: str) -> list[dict]:
    """Every ``event: job`` of the job's stream, until the server closes it (a final state)."""
    seen, event = [], None
    with http.stream("GET", f"/api/jobs/{job_id}/events", timeout=300) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                assert event == "job"
                seen.append(json.loads(line[5:]))
    assert seen and seen[-1]["state"] in FINAL, seen[-1:]
    return seen


@pytest.fixture(scope="module")
def sample(http):
    return upload(http, SAMPLE)


def test_upload_summary_and_cover(http, sample):
    assert sample["name"] == "childrens-literature.epub"
    assert sample["size"] == SAMPLE.stat().st_size
    assert sample["error"] is None
    assert "path" not in sample  # never a server path
    summary = sample["summary"]
    assert summary["title"] == "Children's Literature"
    assert [c["index"] for c in summary["chapters"]] == list(range(1, 16))
    assert summary["skipped"] and all(s["index"] is None for s in summary["skipped"])
    assert all(s["kind"] in ("front", "back") and s["reason"] for s in summary["skipped"])
    assert "source" not in summary
    assert summary["cover"] and sample["cover_url"] == f"/api/uploads/{sample['id']}/cover"
    cover = http.get(sample["cover_url"])
    assert cover.status_code == 200
    assert cover.headers["content-type"] == summary["cover"]
    assert cover.content[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xe1")
    again = http.get(f"/api/uploads/{sample['id']}").json()
    assert again["summary"] == summary and again["job_id"] is None


def test_engines_and_cluster(http):
    engines = http.get("/api/engines").json()["engines"]
    names = [e["name"] for e in engines]
    assert "espeak" in names and "fake" in names
    available = [e["available"] for e in engines]
    assert available == sorted(available, reverse=True)  # available ones first
    espeak = engines[names.index("espeak")]
    assert espeak["available"] and any(v["id"] for v in espeak["voices"])
    cluster = http.get("/api/cluster").json()
    assert cluster["connected"] is True and cluster["workers"] == 1
    assert cluster["scheduler"].startswith(("tcp://", "inproc://", "tls://"))


@pytest.mark.parametrize(
    "body, detail",
    [
        ({"options": {"model": "/etc/passwd"}}, "options.model: Extra inputs are not permitted"),
        ({"options": {"cache": "/tmp/x"}}, "options.cache: Extra inputs are not permitted"),
        ({"options": {"lexicons": ["/x"]}}, "options.lexicons: Extra inputs are not permitted"),
        ({"options": {"storage_options": {}}}, "options.storage_options: Extra inputs"),
        ({"options": {"engine": "espeak", "voice": "no-such-voice"}}, "options.voice: "),
        ({"options": {"engine": "no-such-engine"}}, "options.engine: no-such-engine is not"),
        ({"options": {"pauses": {"nap": 1}}}, "options: unknown pause 'nap'"),
        (
            {"options": {"engine": "espeak", "settings": {"model_path": "/x"}}},
            "options.settings: unknown espeak setting(s) model_path: supported are ",
        ),
        ({"options": {"format": "exe"}}, "options.format: "),
        ({"chapters": "3-1"}, "books[0].chapters: bad chapter range '3-1'"),
        ({"chapters": "99"}, "books[0].chapters: chapter 99 does not exist (the book has 15)"),
        ({"upload_id": "nope"}, "books[0].upload_id: no such upload"),
        ({"books": 6}, "books: at most 5 books per job"),
        ({"books": 2}, "books[1].upload_id: the same upload as books[0]"),
        ({"books": 0}, "books: give at least one upload"),
    ],
)
def test_job_validation_422(http, sample, body, detail):
    book = {"upload_id": body.get("upload_id", sample["id"]), "chapters": body.get("chapters")}
    request = {"books": [book] * body.get("books", 1), "options": body.get("options", {})}
    r = http.post("/api/jobs", json=request)
    assert r.status_code == 422, r.text
    text = r.json()["detail"]
    assert isinstance(text, str) and "\n" not in text
    assert text.startswith(detail), text


def test_convert_chapters_2_3_follow_events_download(http, sample, tmp_path):
    voice = next(
        v["id"]
        for e in http.get("/api/engines").json()["engines"]
        if e["name"] == "espeak"
        for v in e["voices"]
        if v["id"].startswith("en")
    )
    r = http.post(
        "/api/jobs",
        json={
            "books": [{"upload_id": sample["id"], "chapters": "2-3"}],
            "options": {"engine": "espeak", "voice": voice, "subtitles": "vtt"},
        },
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["state"] in ("queued", "running") and job["books"][0]["chapters"] == "2-3"
    events = follow(http, job["id"])
    fractions = [e["progress"]["fraction"] for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(e["books"][0]["chunks_total"] > 0 for e in events)
    job = events[-1]
    assert job["state"] == "done", job
    book = job["books"][0]
    assert book["state"] == "done" and book["error"] is None
    assert book["chunks_done"] == book["chunks_total"] > 0
    files = {f["kind"]: f for f in book["files"]}
    assert set(files) == {"audio", "report", "subtitles"}

    def download(kind: str) -> Path:
        f = files[kind]
        r = http.get(f"/api/jobs/{job['id']}/books/0/files/{f['name']}")
        assert r.status_code == 200, r.text
        assert "attachment" in r.headers["content-disposition"]
        assert len(r.content) == f["size"]
        path = tmp_path / f["name"]
        path.write_bytes(r.content)
        return path

    m4b = download("audio")
    assert m4b.suffix == ".m4b"
    report = json.loads(download("report").read_text())
    assert [c["title"] for c in report["chapters"]] == [
        c["title"] for c in sample["summary"]["chapters"][1:3]
    ]
    check_m4b_against_report(m4b, report, expect_cover=True)
    vtt = download("subtitles").read_text()
    assert vtt.startswith("WEBVTT") and "-->" in vtt
    listed = http.get("/api/jobs").json()["jobs"]
    assert job["id"] in [j["id"] for j in listed]


def test_queue_events_stream_starts_with_the_jobs(http, server):
    with http.stream("GET", "/api/events", timeout=60) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        assert next(lines) == "event: jobs"
        data = next(lines)
        assert data.startswith("data: ") and "jobs" in json.loads(data[6:])


@pytest.mark.slow
def test_idle_event_stream_keeps_alive(http):
    """With nothing changing, the stream sends a comment every 15 s (proxies keep it open)."""
    with http.stream("GET", "/api/events", timeout=60) as r:
        lines = r.iter_lines()
        assert next(lines) == "event: jobs"
        start = time.monotonic()
        rest = [next(lines) for _ in range(3)]  # data, blank, then the keep-alive comment
        waited = time.monotonic() - start
    assert rest[0].startswith("data: ") and rest[1] == "" and rest[2] == ": keep-alive"
    assert waited >= 10  # a comment after a quiet while, not a flood


def test_voice_preview(http, sample):
    r = http.post("/api/preview", json={"upload_id": sample["id"], "engine": "espeak"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    with wave.open(BytesIO(r.content)) as w:
        audio_s = w.getnframes() / w.getframerate()  # audio length, not wall time
    assert 0.5 < audio_s < 60
    r = http.post("/api/preview", json={"text": "Hello.", "engine": "espeak", "voice": "zz"})
    assert r.status_code == 422 and r.json()["detail"].startswith("options.voice:")


def test_job_lifecycle_priority_cancel_retry_delete(http, sample):
    # one job at a time (jobs-in-flight 1): the second job waits behind the first
    blocker = http.post(
        "/api/jobs", json={"books": [{"upload_id": sample["id"]}], "options": {"engine": "espeak"}}
    ).json()
    deadline = time.monotonic() + 120
    while http.get(f"/api/jobs/{blocker['id']}").json()["state"] == "queued":
        assert time.monotonic() < deadline, "the first job never started"
        time.sleep(0.1)
    create = {
        "books": [{"upload_id": sample["id"], "chapters": "2"}],
        "options": {"engine": "fake"},
    }
    job = http.post("/api/jobs", json=create).json()
    assert job["state"] == "queued" and job["position"] == 1
    r = http.patch(f"/api/jobs/{job['id']}", json={"priority": 7})
    assert r.status_code == 200 and r.json()["priority"] == 7
    assert http.patch(f"/api/jobs/{job['id']}", json={"priority": "high"}).status_code == 422
    assert http.delete(f"/api/jobs/{job['id']}").status_code == 409  # not finished
    r = http.post(f"/api/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"  # queued: at once
    assert [b["state"] for b in r.json()["books"]] == ["cancelled"]
    # the running blocker: cancelling, then cancelled once its tasks stopped
    assert http.post(f"/api/jobs/{blocker['id']}/cancel").json()["state"] in (
        "cancelling",
        "cancelled",
    )
    ended = follow(http, blocker["id"])[-1]
    assert ended["state"] == "cancelled", json.dumps(ended)
    # retry queues the cancelled book again; it runs to the end
    r = http.post(f"/api/jobs/{job['id']}/retry")
    assert r.status_code == 200 and r.json()["state"] in ("queued", "running")
    final = follow(http, job["id"])[-1]
    assert final["state"] == "done", final
    assert http.post(f"/api/jobs/{job['id']}/retry").json()["state"] == "done"  # unchanged
    assert http.post(f"/api/jobs/{job['id']}/cancel").json()["state"] == "done"
    # a finished job is deleted with its outputs; then it is gone
    name = final["books"][0]["files"][0]["name"]
    assert http.get(f"/api/jobs/{job['id']}/books/0/files/{name}").status_code == 200
    assert http.delete(f"/api/jobs/{job['id']}").status_code == 204
    assert http.get(f"/api/jobs/{job['id']}").status_code == 404
    assert http.get(f"/api/jobs/{job['id']}/books/0/files/{name}").status_code == 404
    assert http.delete(f"/api/jobs/{blocker['id']}").status_code == 204
    for method, path in [
        ("GET", "/api/jobs/nope"),
        ("PATCH", "/api/jobs/nope"),
        ("POST", "/api/jobs/nope/cancel"),
        ("POST", "/api/jobs/nope/retry"),
        ("DELETE", "/api/jobs/nope"),
        ("GET", "/api/jobs/nope/events"),
        ("GET", "/api/uploads/nope"),
        ("GET", "/api/uploads/nope/cover"),
        ("DELETE", "/api/uploads/nope"),
    ]:
        r = http.request(method, path, json={"priority": 1} if method == "PATCH" else None)
        assert r.status_code == 404, (method, path, r.text)
        assert list(r.json()) == ["detail"] and isinstance(r.json()["detail"], str)


def test_delete_upload(http, sample, server):
    extra = upload(http, SAMPLE, "spare copy.epub")
    stored = sorted(p.name for p in (server.data / "uploads").iterdir())
    assert http.delete(f"/api/uploads/{extra['id']}").status_code == 204
    assert http.get(f"/api/uploads/{extra['id']}").status_code == 404
    left = sorted(p.name for p in (server.data / "uploads").iterdir())
    assert len(stored) - len(left) == 2  # the book and its cover
    used = http.post(
        "/api/jobs", json={"books": [{"upload_id": sample["id"]}], "options": {"engine": "fake"}}
    ).json()
    assert http.delete(f"/api/uploads/{sample['id']}").status_code == 409
    http.post(f"/api/jobs/{used['id']}/cancel")
    follow(http, used["id"])


def test_hostile_uploads_fail_only_their_own_book(http, server, tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    hostile = {
        "zip-bomb": build_zip_bomb(books),
        "drm": build_drm(books),
        "xxe": build_xxe_epub3(books),
        "dotdot": build_dotdot_names(books),
    }
    uploads = {k: upload(http, p, f"../../{p.name}") for k, p in hostile.items()}
    for key, record in uploads.items():
        assert record["name"] == hostile[key].name  # the client's path is dropped
    assert "limit per member" in uploads["zip-bomb"]["error"]
    assert uploads["zip-bomb"]["error"].startswith("zip-bomb.epub: ")
    assert "DRM" in uploads["drm"]["error"] and uploads["drm"]["summary"] is None
    for record in uploads.values():
        assert record["error"] is None or "\n" not in record["error"]
        assert str(server.data) not in json.dumps(record)  # no server path in what is shown
    assert SECRET not in json.dumps(uploads["xxe"])
    # nothing was written outside the uploads folder under a name the client chose
    stored = {p.name for p in (server.data / "uploads").iterdir()}
    assert not any(".." in n or "/" in n or n.startswith("zip-bomb") for n in stored)
    for name in DOTDOT_NAMES:
        for root in (server.data, server.data.parent, Path("/tmp")):
            assert not (root / name).exists()

    good = upload(http, SAMPLE)
    order = ["zip-bomb", "drm", "xxe", "dotdot"]
    job = http.post(
        "/api/jobs",
        json={
            "books": [{"upload_id": uploads[k]["id"]} for k in order]
            + [{"upload_id": good["id"], "chapters": "2"}],
            "options": {"engine": "espeak"},
        },
    ).json()
    final = follow(http, job["id"])[-1]
    assert final["state"] == "failed"
    states = [b["state"] for b in final["books"]]
    assert states[:2] == ["failed", "failed"] and states[-1] == "done", final["books"]
    for b in final["books"][:2]:
        assert b["error"] and "\n" not in b["error"] and b["files"] == []
    assert "limit per member" in final["books"][0]["error"]
    assert "DRM" in final["books"][1]["error"]
    # the good book finished with its audio
    audio = [f for f in final["books"][-1]["files"] if f["kind"] == "audio"]
    r = http.get(f"/api/jobs/{job['id']}/books/4/files/{audio[0]['name']}")
    assert r.status_code == 200 and r.content[4:8] == b"ftyp"
    # the XXE book never held the secret, whatever became of it
    for i in (2, 3):
        for f in final["books"][i]["files"]:
            if f["kind"] == "report":
                text = http.get(f"/api/jobs/{job['id']}/books/{i}/files/{f['name']}").text
                assert SECRET not in text
