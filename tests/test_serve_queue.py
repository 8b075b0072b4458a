"""The server's job queue (serve/store.py) and its runner (serve/runner.py).

The store's units need no cluster.  The runner is tested in-process on a
real LocalCluster, then through real ``ebook2audio serve`` processes: one
SIGKILLed mid-job and restarted on the same data folder (no chunk
synthesised twice), and one whose external scheduler goes away and comes back.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from helpers import ROOT, check_m4b_against_report, load_report, wait_for
from logging_tts import LOG_ENV, SLEEP_ENV, logged_texts
from serve_helpers import PLUGINS, ServerProcess, free_port

from ebook2audio_dask.errors import UsageError
from ebook2audio_dask.serve.runner import Runner
from ebook2audio_dask.serve.settings import ServeSettings
from ebook2audio_dask.serve.store import SCHEMA_VERSION, JobStore

# -- the store -------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    s = JobStore(tmp_path / "queue.sqlite3")
    yield s
    s.close()


def add_upload(store: JobStore, name: str = "book.epub", title: str | None = "A Book") -> str:
    summary = {"title": title, "chapters": []} if title else None
    return store.add_upload(name=name, path=f"/data/uploads/{name}", size=10,
                            summary=summary, error=None)["id"]  # fmt: skip


def new_job(store: JobStore, priority: int = 0, n_books: int = 1) -> dict:
    books = [{"upload_id": add_upload(store, f"b{i}.epub"), "chapters": None}
             for i in range(n_books)]  # fmt: skip
    return store.create_job(books=books, options={"engine": "espeak"}, priority=priority,
                            output="/data/outputs")  # fmt: skip


def test_create_job_record_shape(store):
    up = add_upload(store, "moby.epub", "Moby Dick")
    assert store.pending_uploads() == 1
    job = store.create_job(books=[{"upload_id": up, "chapters": "2-3"}],
                           options={"engine": "espeak", "subtitles": "srt"}, priority=5,
                           output="/data/outputs/")  # fmt: skip
    assert job["state"] == "queued" and job["priority"] == 5 and job["position"] == 1
    assert job["output"] == f"/data/outputs/{job['id']}"
    assert job["options"] == {"engine": "espeak", "subtitles": "srt"}
    assert job["error"] is None
    assert job["progress"] == {"chunks_done": 0, "chunks_total": 0, "fraction": 0.0, "eta_s": None}
    [book] = job["books"]
    assert book == {"index": 0, "upload_id": up, "name": "moby.epub", "title": "Moby Dick",
                    "chapters": "2-3", "state": "queued", "chunks_done": 0, "chunks_total": 0,
                    "chunks_from_cache": 0, "eta_s": None, "error": None, "exit_code": None,
                    "files": []}  # fmt: skip
    assert store.pending_uploads() == 0
    assert store.get_upload(up)["job_id"] == job["id"]
    assert store.delete_upload(up) is False  # a job uses it
    with pytest.raises(LookupError, match="no upload 'nope'"):
        store.create_job(books=[{"upload_id": "nope"}], options={}, priority=0, output="/o")
    with pytest.raises(ValueError, match="at least one book"):
        store.create_job(books=[], options={}, priority=0, output="/o")
    assert len(store.list_jobs()) == 1  # the refused jobs left nothing


def test_upload_records(store):
    up = store.add_upload(name="x.txt", path="/d/u/1", size=3, summary=None, error="x.txt: bad")
    assert store.get_upload(up["id"]) == up
    assert up["error"] == "x.txt: bad" and up["summary"] is None and up["job_id"] is None
    assert store.pending_uploads() == 1
    assert store.delete_upload(up["id"]) is True
    assert store.get_upload(up["id"]) is None and store.delete_upload(up["id"]) is False


def test_queue_order_priority_then_created(store):
    a = new_job(store, priority=0)
    b = new_job(store, priority=10)
    c = new_job(store, priority=0)
    d = new_job(store, priority=10)
    order = [j["id"] for j in store.list_jobs()]
    assert order == [b["id"], d["id"], a["id"], c["id"]]
    assert [j["position"] for j in store.list_jobs()] == [1, 2, 3, 4]
    # reprioritise: c jumps to the front
    assert store.set_priority(c["id"], 20)["priority"] == 20
    assert [j["id"] for j in store.list_jobs()] == [c["id"], b["id"], d["id"], a["id"]]
    assert store.set_priority("nope", 1) is None
    # the runner claims in that order; running jobs come first, with no position
    assert store.claim_next()["id"] == c["id"]
    jobs = store.list_jobs()
    assert [j["id"] for j in jobs] == [c["id"], b["id"], d["id"], a["id"]]
    assert jobs[0]["state"] == "running" and jobs[0]["position"] is None
    assert [j["position"] for j in jobs[1:]] == [1, 2, 3]
    # finished jobs last, most recently finished first
    store.release_job(c["id"], "finished")
    assert store.cancel(a["id"])["state"] == "cancelled"
    assert [j["id"] for j in store.list_jobs()] == [b["id"], d["id"], a["id"], c["id"]]
    # only the newest finished jobs when asked (GET /api/jobs?finished=N): every active one
    assert [j["id"] for j in store.list_jobs(finished=1)] == [b["id"], d["id"], a["id"]]
    assert [j["id"] for j in store.list_jobs(finished=0)] == [b["id"], d["id"]]


def test_cancel_queued_and_running(store):
    queued = new_job(store, n_books=2)
    job = store.cancel(queued["id"])
    assert job["state"] == "cancelled" and job["position"] is None
    assert [b["state"] for b in job["books"]] == ["cancelled", "cancelled"]
    running = new_job(store)
    store.claim_next()
    assert store.cancel(running["id"])["state"] == "cancelling"  # the runner finishes it
    assert store.release_job(running["id"], "cancelled")["state"] == "cancelled"
    assert store.cancel(running["id"])["state"] == "cancelled"  # unchanged
    assert store.cancel("nope") is None
    assert store.claim_next() is None


def test_finish_and_retry_failed_books(store):
    job = new_job(store, n_books=2)
    store.claim_next()
    files = [{"name": "b0.m4b", "kind": "audio", "size": 99, "url": "/data/outputs/x/b0.m4b"}]
    store.update_books(job["id"], {
        0: {"state": "done", "chunks_total": 4, "chunks_done": 4, "exit_code": 0, "files": files},
        1: {"state": "failed", "chunks_total": 6, "chunks_done": 2, "error": "b1.epub: bad",
            "exit_code": 1},
    })  # fmt: skip
    assert store.retry(job["id"])["state"] == "running"  # only a finished job is retried
    done = store.release_job(job["id"], "finished")
    assert done["state"] == "failed"
    assert done["error"] == "1 of 2 book(s) failed: b1.epub: bad"
    assert done["progress"]["chunks_done"] == 6 and done["progress"]["chunks_total"] == 10
    assert done["books"][0]["files"] == [{"name": "b0.m4b", "kind": "audio", "size": 99}]
    assert store.file_url(job["id"], 0, "b0.m4b") == "/data/outputs/x/b0.m4b"
    assert store.file_url(job["id"], 0, "../b0.m4b") is None
    assert store.file_url(job["id"], 1, "b0.m4b") is None
    again = store.retry(job["id"])
    assert again["state"] == "queued" and again["error"] is None
    assert [b["state"] for b in again["books"]] == ["done", "queued"]
    assert again["books"][1]["error"] is None and again["books"][1]["exit_code"] is None
    assert store.delete_job(job["id"]) is False  # not finished
    store.claim_next()
    store.update_books(job["id"], {1: {"state": "done", "exit_code": 0}})
    final = store.release_job(job["id"], "finished")
    assert final["state"] == "done" and final["progress"]["fraction"] == 1.0
    assert store.retry(job["id"])["state"] == "done"  # nothing to retry
    assert store.delete_job(job["id"]) is True
    assert store.get_job(job["id"]) is None
    assert store.pending_uploads() == 2  # its uploads are free again


def test_reopen_keeps_everything_and_recovers_interrupted_jobs(tmp_path):
    path = tmp_path / "queue.sqlite3"
    first = JobStore(path)
    running = new_job(first, priority=1, n_books=2)
    cancelling = new_job(first, priority=1)
    queued = new_job(first)
    waiting = new_job(first, priority=1)
    assert first.claim_next()["id"] == running["id"]
    first.update_books(running["id"], {0: {"state": "done", "exit_code": 0},
                                       1: {"state": "running", "chunks_done": 3}})  # fmt: skip
    assert first.claim_next()["id"] == cancelling["id"]
    first.cancel(cancelling["id"])
    assert first.claim_next()["id"] == waiting["id"]
    first.release_job(waiting["id"], "waiting")
    before = {j["id"]: j for j in first.list_jobs()}
    # no close(): a killed process does not close its database
    second = JobStore(path)
    assert {j["id"]: j for j in second.list_jobs()} == before
    assert sorted(second.recover()) == sorted([running["id"], waiting["id"]])
    jobs = {j["id"]: j for j in second.list_jobs()}
    assert jobs[running["id"]]["state"] == "queued"
    assert [b["state"] for b in jobs[running["id"]]["books"]] == ["done", "queued"]
    assert jobs[running["id"]]["books"][1]["chunks_done"] == 3
    assert jobs[cancelling["id"]]["state"] == "cancelled"
    assert jobs[waiting["id"]]["state"] == "queued"
    assert jobs[queued["id"]]["state"] == "queued"
    assert second.claim_next()["id"] == running["id"]  # priority 1, oldest
    first.close()
    second.close()


def test_schema_version_and_bad_files(tmp_path):
    path = tmp_path / "queue.sqlite3"
    JobStore(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
            str(SCHEMA_VERSION),
        )
        db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(UsageError, match=r"queue.sqlite3: job queue written by a newer"):
        JobStore(path)
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(UsageError, match=r"junk.sqlite3: not a job queue database"):
        JobStore(junk)
    assert junk.read_bytes() == b"this is not a database at all" * 100  # left as it was


def test_concurrent_writers(store):
    errors = []

    def writer(i):
        try:
            for k in range(10):
                job = new_job(store, priority=k % 3)
                store.set_priority(job["id"], i)
                store.list_jobs()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    jobs = store.list_jobs()
    assert len(jobs) == 80 and len({j["id"] for j in jobs}) == 80
    assert [j["position"] for j in jobs] == list(range(1, 81))
    claimed = []

    def claimer():
        while (job := store.claim_next()) is not None:
            claimed.append(job["id"])

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(j["id"] for j in jobs)  # each claimed exactly once


def test_wait_change_wakes_on_a_change(store):
    version = store.version
    assert store.wait_change(version, 0.05) == version  # nothing changed: times out
    woke = []
    t = threading.Thread(target=lambda: woke.append(store.wait_change(version, 60)))
    t.start()
    job = new_job(store)
    t.join(60)
    assert woke and woke[0] != version
    for change in (
        lambda: store.set_priority(job["id"], 3),
        lambda: store.claim_next(),
        lambda: store.update_books(job["id"], {0: {"chunks_done": 1}}),
        lambda: store.cancel(job["id"]),
    ):
        before = store.version
        change()
        assert store.version > before
    # an idle runner's polls change no row: they wake no one
    store.recover()  # the claimed job, cancelling, ends cancelled: nothing left to change
    for no_change in (store.claim_next, store.requeue_waiting, store.recover):
        before = store.version
        no_change()
        assert store.version == before, no_change


# -- the runner, in-process on a real LocalCluster --------------------------------------------

SAMPLE = ROOT / "examples" / "childrens-literature.epub"
FINAL = ("done", "failed", "cancelled")


@pytest.fixture
def logging_engine(tmp_path, monkeypatch):
    """The ``logging-test`` engine's log file, for the worker processes the test starts."""
    log = tmp_path / "spoken.log"
    monkeypatch.setenv(LOG_ENV, str(log))
    monkeypatch.setenv(SLEEP_ENV, "0")
    paths = [str(PLUGINS)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    return log


def server_settings(tmp_path, **overrides) -> ServeSettings:
    data = tmp_path / "data"
    base = {"cluster": {"n_workers": 1}, "engine_threads": 1, "reconnect_interval": 0.5,
            "jobs_in_flight": 2}  # fmt: skip
    base.update(overrides)
    return ServeSettings(data=data, output=str(data / "outputs"), cache=str(data / "chunks"),
                         **base)  # fmt: skip


def upload_book(store: JobStore, settings: ServeSettings, name: str, source=SAMPLE) -> str:
    """Store *source* under a generated name, as the API does; returns the upload's id."""
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    path = settings.uploads_dir / f"{len(list(settings.uploads_dir.iterdir())):04d}-{name}"
    shutil.copyfile(source, path)
    return store.add_upload(name=name, path=str(path), size=path.stat().st_size,
                            summary={"title": None}, error=None)["id"]  # fmt: skip


def wait_job(store: JobStore, job_id: str, states=FINAL, timeout: float = 300) -> dict:
    return wait_for(lambda: (j := store.get_job(job_id))["state"] in states and j, timeout,
                    f"job {job_id} to be {'/'.join(states)}: {store.get_job(job_id)}",
                    interval=0.2)  # fmt: skip


@contextlib.contextmanager
def running(store: JobStore, settings: ServeSettings):
    runner = Runner(store, settings)
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


def book_report(store: JobStore, job: dict, index: int = 0) -> dict:
    """The report a finished book published (found through its recorded files)."""
    [name] = [f["name"] for f in job["books"][index]["files"] if f["kind"] == "report"]
    return load_report(store.file_url(job["id"], index, name))


def spoken(log) -> list[str]:
    return [text for _, text in logged_texts(log)]


def test_runner_converts_a_job_of_two_books(tmp_path, logging_engine):
    settings = server_settings(tmp_path)
    store = JobStore(settings.queue_path)
    books = [{"upload_id": upload_book(store, settings, "one.epub"), "chapters": "2"},
             {"upload_id": upload_book(store, settings, "two.epub"), "chapters": "3"}]  # fmt: skip
    job = store.create_job(books=books, options={"engine": "logging-test", "subtitles": "srt"},
                           priority=0, output=settings.output)  # fmt: skip
    versions = []
    with running(store, settings) as runner:
        assert runner.connected and runner.client is not None
        assert runner.dashboard_link is None or runner.dashboard_link.startswith("http")
        v = store.version
        while (j := store.get_job(job["id"]))["state"] not in FINAL:
            v = store.wait_change(v, 60)
            versions.append(j["progress"]["chunks_done"])
        assert j["state"] == "done", j
        assert j["progress"]["fraction"] == 1.0 and j["progress"]["chunks_done"] > 0
        for book, chapter in zip(j["books"], ("191 THE LORD HELPETH MAN AND BEAST",
                                              "192 THE REAL PRINCESS")):  # fmt: skip
            assert book["state"] == "done" and book["exit_code"] == 0 and book["error"] is None
            assert book["title"] == "Children's Literature"
            assert book["chunks_done"] == book["chunks_total"] > 0
            assert book["chunks_from_cache"] <= 2  # a chunk both books share (same book)
            kinds = {f["kind"]: f for f in book["files"]}
            stem = ("one", "two")[book["index"]]  # the uploaded file's name, not the stored one
            assert {f["name"] for f in book["files"]} == {f"{stem}.m4b", f"{stem}.report.json",
                                                          f"{stem}.srt"}  # fmt: skip
            assert set(kinds) == {"audio", "report", "subtitles"}, book["files"]
            for f in book["files"]:
                url = runner.file_path(job["id"], book["index"], f["name"])
                assert url and Path(url).parent == Path(j["output"])
                assert Path(url).stat().st_size == f["size"] > 0
            audio = Path(runner.file_path(job["id"], book["index"], kinds["audio"]["name"]))
            report = load_report(runner.file_path(job["id"], book["index"],
                                                  kinds["report"]["name"]))  # fmt: skip
            assert [c["title"] for c in report["chapters"]] == [chapter]
            check_m4b_against_report(audio, report, expect_cover=True)
            assert runner.file_path(job["id"], book["index"], "../../queue.sqlite3") is None
            assert runner.file_path(job["id"], 5, kinds["audio"]["name"]) is None
        # progress was seen growing, not only at the end
        assert any(0 < n < j["progress"]["chunks_total"] for n in versions), versions
        # every chunk spoken once
        texts = spoken(logging_engine)
        assert len(texts) == len(set(texts)) > 0.9 * j["progress"]["chunks_total"]
        assert Path(j["output"]) == Path(settings.job_output(job["id"]))
        # deleting the job deletes its outputs
        assert runner.delete_job(job["id"]) and not Path(j["output"]).exists()
    store.close()


def test_runner_cancel_then_retry_resumes_from_the_chunk_store(tmp_path, logging_engine,
                                                               monkeypatch):  # fmt: skip
    monkeypatch.setenv(SLEEP_ENV, "0.05")
    settings = server_settings(tmp_path)
    store = JobStore(settings.queue_path)
    up = upload_book(store, settings, "book.epub")
    job = store.create_job(books=[{"upload_id": up, "chapters": "1-2"}],
                           options={"engine": "logging-test"}, priority=0,
                           output=settings.output)  # fmt: skip
    queued = store.create_job(books=[{"upload_id": upload_book(store, settings, "q.epub"),
                                      "chapters": "2"}],
                              options={"engine": "logging-test"}, priority=-5,
                              output=settings.output)  # fmt: skip
    with running(store, settings) as runner:
        assert runner.cancel(queued["id"])["state"] in ("cancelled", "cancelling")
        wait_for(lambda: store.get_job(job["id"])["progress"]["chunks_done"] >= 10, 240,
                 "some chunks of the book")  # fmt: skip
        assert runner.cancel(job["id"])["state"] in ("cancelling", "cancelled")
        j = wait_job(store, job["id"])
        assert j["state"] == "cancelled", j
        assert j["books"][0]["state"] == "cancelled" and j["books"][0]["files"] == []
        assert not list(Path(j["output"]).glob("*.m4b"))  # nothing published
        assert wait_job(store, queued["id"])["state"] == "cancelled"
        # a synthesize task already running finishes its batch (Dask cannot stop a thread):
        # its chunks are in the store for the retry
        stopped = len(spoken(logging_engine))
        assert stopped > 0
        assert store.retry(job["id"])["state"] == "queued"
        runner.wake()
        j = wait_job(store, job["id"])
        assert j["state"] == "done", j
        book = j["books"][0]
        assert book["chunks_from_cache"] >= stopped - 2  # what was made before is reused
        texts = spoken(logging_engine)
        assert len(set(texts)) == book_report(store, j)["totals"]["unique_chunks"]
        assert len(texts) <= 1.1 * len(set(texts)), (len(texts), len(set(texts)))
    store.close()


def test_runner_stop_requeues_and_a_new_runner_finishes(tmp_path, logging_engine, monkeypatch):
    monkeypatch.setenv(SLEEP_ENV, "0.05")
    settings = server_settings(tmp_path)
    store = JobStore(settings.queue_path)
    job = store.create_job(
        books=[{"upload_id": upload_book(store, settings, "book.epub"), "chapters": "1-2"}],
        options={"engine": "logging-test"}, priority=0, output=settings.output,
    )  # fmt: skip
    with running(store, settings):
        wait_for(lambda: store.get_job(job["id"])["progress"]["chunks_done"] >= 10, 240,
                 "some chunks of the book")  # fmt: skip
    j = store.get_job(job["id"])  # a clean stop: queued again, nothing failed
    assert j["state"] == "queued" and j["books"][0]["state"] == "queued", j
    assert j["error"] is None and j["books"][0]["error"] is None
    made = len(spoken(logging_engine))
    store.close()
    store = JobStore(settings.queue_path)
    with running(store, settings):
        j = wait_job(store, job["id"])
    assert j["state"] == "done", j
    assert j["books"][0]["chunks_from_cache"] >= made - 2
    texts = spoken(logging_engine)
    assert len(set(texts)) == book_report(store, j)["totals"]["unique_chunks"]
    assert len(texts) <= 1.1 * len(set(texts)), (len(texts), len(set(texts)))
    store.close()


def test_runner_fails_a_bad_book_only(tmp_path, logging_engine):
    settings = server_settings(tmp_path)
    store = JobStore(settings.queue_path)
    bad = tmp_path / "bad.epub"
    bad.write_bytes(b"PK\x03\x04 this is no zip")
    books = [{"upload_id": upload_book(store, settings, "bad.epub", source=bad), "chapters": None},
             {"upload_id": upload_book(store, settings, "good.epub"), "chapters": "2"},
             {"upload_id": upload_book(store, settings, "far.epub"), "chapters": "99"},
             {"upload_id": upload_book(store, settings, "gone.epub"), "chapters": "2"}]  # fmt: skip
    Path(store.get_upload(books[3]["upload_id"])["path"]).unlink()
    job = store.create_job(books=books, options={"engine": "logging-test"}, priority=0,
                           output=settings.output)  # fmt: skip
    with running(store, settings):
        j = wait_job(store, job["id"])
    assert j["state"] == "failed"
    bad_book, good, far, gone = j["books"]
    assert good["state"] == "done" and good["files"]
    for book in (bad_book, far, gone):
        assert book["state"] == "failed" and book["files"] == [], book
        # one line, naming the file as uploaded, not the server's folders
        assert "\n" not in book["error"] and book["error"].startswith(book["name"]), book
        assert str(settings.data) not in book["error"], book
    assert bad_book["exit_code"] == 1 and far["exit_code"] == 2
    assert gone["exit_code"] == 1
    assert gone["error"] == "gone.epub: the uploaded file is no longer on the server"
    assert j["error"].startswith("3 of 4 book(s) failed: bad.epub: "), j["error"]
    store.close()


def test_runner_books_with_the_same_name_get_folders_of_their_own(tmp_path, logging_engine):
    """The same upload twice, and two uploads of one name: each book its own files."""
    settings = server_settings(tmp_path)
    store = JobStore(settings.queue_path)
    first = upload_book(store, settings, "Book.epub")
    other = upload_book(store, settings, "book.epub")
    books = [{"upload_id": first, "chapters": "2"}, {"upload_id": first, "chapters": "3"},
             {"upload_id": other, "chapters": "2"}]  # fmt: skip
    job = store.create_job(books=books, options={"engine": "logging-test"}, priority=0,
                           output=settings.output)  # fmt: skip
    with running(store, settings) as runner:
        j = wait_job(store, job["id"])
        assert j["state"] == "done", j
        urls = []
        for book in j["books"]:
            [audio] = [f["name"] for f in book["files"] if f["kind"] == "audio"]
            assert audio.casefold() == "book.m4b"
            urls.append(Path(runner.file_path(job["id"], book["index"], audio)))
    assert urls == [Path(j["output"]) / "Book.m4b", Path(j["output"]) / "1" / "Book.m4b",
                    Path(j["output"]) / "2" / "book.m4b"]  # fmt: skip
    chapters = [load_report(u.with_name(u.stem + ".report.json"))["chapters"] for u in urls]
    assert [len(c) for c in chapters] == [1, 1, 1]
    assert chapters[0] != chapters[1] and chapters[0] == chapters[2]
    store.close()


# -- real server processes --------------------------------------------------------------------

TOKEN = "queue-test-token"


def post_job(http, chapters: str, priority: int = 0) -> dict:
    """Upload the sample book and create a job of it (logging-test engine) through the API."""
    r = http.post("/api/uploads", params={"filename": "book.epub"}, content=SAMPLE.read_bytes(),
                  headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    assert r.status_code == 201, r.text
    r = http.post("/api/jobs", json={"books": [{"upload_id": r.json()["id"], "chapters": chapters}],
                                     "options": {"engine": "logging-test"},
                                     "priority": priority})  # fmt: skip
    assert r.status_code == 201, r.text
    return r.json()


def api_job(server: ServerProcess, job_id: str) -> dict:
    with server.client() as http:
        r = http.get(f"/api/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()


def download_and_check(server: ServerProcess, job: dict, tmp_path: Path) -> dict:
    """Download the book's M4B and report through the API; check one against the other."""
    files = {f["kind"]: f["name"] for f in job["books"][0]["files"]}
    got = {}
    with server.client() as http:
        for kind in ("audio", "report"):
            r = http.get(f"/api/jobs/{job['id']}/books/0/files/{files[kind]}")
            assert r.status_code == 200, r.text
            got[kind] = tmp_path / files[kind]
            got[kind].write_bytes(r.content)
    report = load_report(got["report"])
    check_m4b_against_report(got["audio"], report, expect_cover=True)
    return report


@pytest.mark.slow
def test_sigkill_mid_job_then_restart_finishes_without_synthesising_twice(tmp_path):
    """The issue's test: SIGKILL the server mid-job, start it again on the same data folder:
    the job finishes, a valid M4B, chunks synthesised in all <= 1.1 x unique chunks."""
    log = tmp_path / "spoken.log"
    env = {LOG_ENV: str(log), SLEEP_ENV: "0.1"}
    server = ServerProcess(tmp_path / "data", "--n-workers", "1", token=TOKEN, env=env)
    try:
        server.start()
        with server.client() as http:
            job = post_job(http, "1-2")
        wait_for(lambda: len(logged_texts(log)) >= 30, 300,
                 f"30 chunks spoken:\n{server.log()}")  # fmt: skip
        server.kill()
        first = logged_texts(log)
        before_pids = {pid for pid, _ in first}
        assert not list((tmp_path / "data" / "outputs").rglob("*.m4b"))  # not finished
        server.restart()
        j = wait_for(lambda: (j := api_job(server, job["id"]))["state"] in FINAL and j, 300,
                     f"the job to finish after the restart:\n{server.log()}")  # fmt: skip
        assert j["state"] == "done", (j, server.log())
        report = download_and_check(server, j, tmp_path)
        all_spoken = logged_texts(log)
        unique = {text for _, text in all_spoken}
        assert len(unique) == report["totals"]["unique_chunks"]
        assert len(all_spoken) <= 1.1 * len(unique), (len(all_spoken), len(unique))
        # both servers' workers spoke: the second one resumed, it did not start over
        after = all_spoken[len(first) :]
        assert after and not {pid for pid, _ in after} & before_pids
        assert len(first) < len(unique)
        assert j["books"][0]["chunks_from_cache"] >= len(first) - 2
    finally:
        server.stop()


class DaskProcess:
    """A ``dask scheduler`` or ``dask worker`` process of its own session, output in a log."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict):
        self.name, self.args, self.log_dir, self.env = name, args, log_dir, env
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> DaskProcess:
        self.starts += 1
        log = open(self.log_dir / f"{self.name}-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", *self.args], stdout=log,
                                     stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)  # fmt: skip
        log.close()
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:]
                         for p in sorted(self.log_dir.glob(f"{self.name}-*.log")))  # fmt: skip


@pytest.mark.slow
def test_scheduler_going_away_and_coming_back_does_not_lose_the_job(tmp_path):
    """``serve --scheduler ADDR``: the scheduler is SIGKILLed mid-job; the job waits (it does
    not fail), then the scheduler comes back on the same port and the job finishes.

    A ``dask worker`` exits when it loses its scheduler (distributed closes it:
    ``worker-handle-scheduler-connection-broken``), so it is started again with
    the scheduler, as a supervisor (systemd ``Restart=always``) would.
    """
    log = tmp_path / "spoken.log"
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(
        [str(PLUGINS), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]),
        **{LOG_ENV: str(log), SLEEP_ENV: "0.1"})  # fmt: skip
    scheduler = DaskProcess(
        "scheduler",
        [
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-dashboard",
        ],
        tmp_path,
        env,
    )
    worker = DaskProcess("worker", ["distributed.cli.dask_worker", address, "--host", "127.0.0.1",
                                    "--nthreads", "1", "--no-dashboard", "--resources", "GPU=1"],
                         tmp_path, env)  # fmt: skip
    server = ServerProcess(tmp_path / "data", "--scheduler", address, token=TOKEN, env={
        "DASK_EBOOK2AUDIO__SERVE__RECONNECT_INTERVAL": "1",
        "DASK_EBOOK2AUDIO__CLUSTER__CONNECT_TIMEOUT": "5",
    })  # fmt: skip

    def workers() -> int:
        with server.client() as http:
            return http.get("/api/cluster").json().get("workers") or 0

    def health() -> dict:
        with server.client() as http:
            return http.get("/healthz").json()

    try:
        scheduler.start()
        worker.start()
        server.start()
        wait_for(workers, 120, f"the worker:\n{worker.log()}\n{server.log()}")
        with server.client() as http:
            job = post_job(http, "1-2")
        wait_for(lambda: len(logged_texts(log)) >= 20, 300,
                 f"20 chunks spoken:\n{worker.log()}\n{server.log()}")  # fmt: skip
        scheduler.kill()
        j = wait_for(lambda: (j := api_job(server, job["id"]))["state"] != "running" and j, 120,
                     f"the job to notice:\n{server.log()}")  # fmt: skip
        assert j["state"] == "waiting", (j, server.log())
        assert all(b["state"] in ("queued", "done") and b["error"] is None for b in j["books"]), j
        wait_for(lambda: not health()["connected"], 60, "the server to see the scheduler gone")
        worker.kill()  # it exits by itself; make sure of it before its port's reuse
        before = len(logged_texts(log))
        scheduler.start()
        worker.start()
        wait_for(lambda: health()["connected"], 120, f"the server to reconnect:\n{server.log()}")
        j = wait_for(lambda: (j := api_job(server, job["id"]))["state"] in FINAL and j, 300,
                     f"the job to finish:\n{worker.log()}\n{server.log()}")  # fmt: skip
        assert j["state"] == "done", (j, server.log())
        report = download_and_check(server, j, tmp_path)
        all_spoken = logged_texts(log)
        unique = {text for _, text in all_spoken}
        assert len(unique) == report["totals"]["unique_chunks"]
        assert len(all_spoken) <= 1.1 * len(unique), (len(all_spoken), len(unique))
        assert 0 < before < len(unique)  # resumed, not started over
    finally:
        server.stop()
        worker.kill()
        scheduler.kill()


def test_runner_takes_jobs_in_priority_order(tmp_path, logging_engine):
    settings = server_settings(tmp_path, jobs_in_flight=1)
    store = JobStore(settings.queue_path)

    def job(name, priority):
        up = upload_book(store, settings, name)
        return store.create_job(books=[{"upload_id": up, "chapters": "2"}],
                                options={"engine": "logging-test"}, priority=priority,
                                output=settings.output)["id"]  # fmt: skip

    a, b, c = job("a.epub", 0), job("b.epub", 5), job("c.epub", 0)
    store.set_priority(c, 10)  # PATCH: c jumps the queue
    with running(store, settings):
        jobs = {i: wait_job(store, i) for i in (a, b, c)}
    assert all(j["state"] == "done" for j in jobs.values()), jobs
    # one job at a time: each book started after the previous one finished
    reports = {i: book_report(store, j) for i, j in jobs.items()}
    started = sorted(reports, key=lambda i: reports[i]["started"])
    for earlier, later in itertools.pairwise(started):
        assert reports[earlier]["finished"] <= reports[later]["started"]
    assert started == [c, b, a]
    store.close()


@pytest.mark.slow
def test_sigterm_mid_job_requeues_it_and_the_next_server_finishes_it(tmp_path):
    """A clean stop (SIGTERM) exits 0 and leaves the running job queued, not failed."""
    log = tmp_path / "spoken.log"
    env = {LOG_ENV: str(log), SLEEP_ENV: "0.1"}
    server = ServerProcess(tmp_path / "data", "--n-workers", "1", token=TOKEN, env=env)
    try:
        server.start()
        with server.client() as http:
            job = post_job(http, "2-3")
        wait_for(lambda: len(logged_texts(log)) >= 10, 300,
                 f"10 chunks spoken:\n{server.log()}")  # fmt: skip
        # a page following the job: its event stream must not hold the stop until the job ends
        streamed: list[str] = []

        def follow() -> None:
            with contextlib.suppress(httpx.HTTPError), server.client(timeout=None) as http:
                with http.stream("GET", f"/api/jobs/{job['id']}/events") as r:
                    for line in r.iter_lines():
                        streamed.append(line)

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        wait_for(lambda: any(line.startswith("event: job") for line in streamed), 60,
                 "the event stream to start")  # fmt: skip
        assert server.stop() == 0, server.log()
        follower.join(60)
        assert not follower.is_alive()  # the stream ended with the server
        store = JobStore(tmp_path / "data" / "queue.sqlite3")
        j = store.get_job(job["id"])
        store.close()
        assert j["state"] == "queued" and j["error"] is None, j
        assert j["books"][0]["state"] == "queued" and j["books"][0]["error"] is None, j
        made = len(logged_texts(log))
        server.restart()
        j = wait_for(lambda: (j := api_job(server, job["id"]))["state"] in FINAL and j, 300,
                     f"the job to finish after the restart:\n{server.log()}")  # fmt: skip
        assert j["state"] == "done", (j, server.log())
        report = download_and_check(server, j, tmp_path)
        texts = [text for _, text in logged_texts(log)]
        assert len(set(texts)) == report["totals"]["unique_chunks"] > made
        assert len(texts) <= 1.1 * len(set(texts)), (len(texts), len(set(texts)))
    finally:
        server.stop()


def test_runner_cancel_as_soon_as_a_job_starts(tmp_path, logging_engine):
    """Cancelled while its books' plans are in flight (run_jobs waits on them): cancelled, not
    failed."""
    settings = server_settings(tmp_path)
    store = JobStore(settings.queue_path)
    ids = [
        store.create_job(
            books=[{"upload_id": upload_book(store, settings, f"{i}.epub")}],
            options={"engine": "logging-test"},
            priority=0,
            output=settings.output,
        )["id"]
        for i in range(2)
    ]
    with running(store, settings) as runner:
        for job_id in ids:
            wait_job(store, job_id, states=("running", *FINAL))
            runner.cancel(job_id)
        jobs = [wait_job(store, job_id) for job_id in ids]
    for j in jobs:
        assert j["state"] == "cancelled" and j["error"] is None, j
        assert [b["state"] for b in j["books"]] == ["cancelled"], j
    store.close()


def test_one_runner_per_data_folder(tmp_path, logging_engine):
    settings = server_settings(tmp_path)
    store = JobStore(settings.queue_path)
    with running(store, settings):
        other = Runner(store, settings)
        busy = rf"data: another ebook2audio serve \(pid {os.getpid()}\) uses this data folder"
        with pytest.raises(UsageError, match=busy):
            other.start()
        assert other.client is None
    with running(store, settings) as runner:  # free again once stopped
        assert runner.connected
    store.close()


def test_runner_lists_the_failures_file_of_a_book_failing_on_the_cluster(tmp_path,
                                                                         monkeypatch):  # fmt: skip
    """A chunk the engine cannot speak (no --allow-gaps): the book fails, and its dead-letter
    file is one of its files."""
    monkeypatch.setenv("E2A_FAULTY_FAIL", "Hebrew")  # a word of chapter 2
    paths = [str(PLUGINS)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    settings = server_settings(tmp_path)
    store = JobStore(settings.queue_path)
    job = store.create_job(
        books=[{"upload_id": upload_book(store, settings, "book.epub"), "chapters": "2"}],
        options={"engine": "faulty", "retries": 0}, priority=0, output=settings.output,
    )  # fmt: skip
    with running(store, settings) as runner:
        j = wait_job(store, job["id"])
        assert j["state"] == "failed", j
        [book] = j["books"]
        assert book["exit_code"] == 1 and book["error"].startswith("book.epub: "), book
        assert [(f["name"], f["kind"]) for f in book["files"]] == [
            ("book.failures.jsonl", "failures")
        ]
        url = runner.file_path(job["id"], 0, "book.failures.jsonl")
        assert "Hebrew" in Path(url).read_text(encoding="utf-8")
        assert Path(url).stat().st_size == book["files"][0]["size"]
    store.close()
