"""The server's job queue (serve/store.py) and its runner (serve/runner.py).

The store's units need no cluster.  The runner is tested in-process on a
real LocalCluster, then through real ``ebook2audio serve`` processes: one
SIGKILLed mid-job and restarted on the same data folder (no chunk
synthesised twice), and one whose external scheduler goes away and comes back.
"""

from __future__ import annotations

import sqlite3
import threading

import pytest

from ebook2audio_dask.errors import UsageError
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
