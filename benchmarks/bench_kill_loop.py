"""Kill a synthesize worker, again and again: does a conversion ever stall, is a chunk ever lost?

Issue 16 item 6 (a CI run once stalled after a worker kill: fewer than 31 of
71 chunks after 240 s).  Each round is a fresh child process, which starts a
fresh ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
resources={"GPU": 1}, host="127.0.0.1")`` (each worker with its nanny) and
converts a small real book with eSpeak NG into a fresh chunk store with
``ebook2audio_dask.convert(book, out, client=client, engine="espeak",
cache=...)`` in a thread.  Once ``--kill-at`` of the book's chunks are in the
store, the worker process (not its nanny) that is executing a synthesize task
is SIGKILLed: each worker is asked in turn (``client.run``) to kill itself if
it is running one, so the kill always lands mid-synthesis.  The nanny starts
a new worker; the conversion must finish.

A round **stalls** when the conversion has not finished ``--stall-factor``
(10) times the fault-free run's wall time after it began (at least
``--min-limit`` seconds); the scheduler's task states (``run_on_scheduler``:
every task's state, worker, suspicious count, and every worker's load) and
each worker's are then written to ``<workdir>/round-N.stall.json`` and summed
up in the round's JSON line.  **Chunks lost**: chunks of the book (the keys
a fault-free conversion stored first, in a run of its own) neither in the
store after the round nor listed in the book's dead-letter file
(``<stem>.failures.jsonl``).  Also checked: the book's result is ``ok``, its
report counts the same unique chunks, the M4B exists and its duration (mutagen)
is the report's ``totals.audio_s`` within 0.25 s.

Only the public API is used (``convert``, ``ChunkStore``, the report JSON),
so the script does not depend on how the graph is built.  Prints one JSON line
per round and a last summary line: rounds, kills, stalls, chunks_lost,
books_failed, median wall.  Target: 0 stalls and 0 chunks lost.

Usage::

    python benchmarks/bench_kill_loop.py            # 20 rounds
    python benchmarks/bench_kill_loop.py --quick    # 2 rounds
    python benchmarks/bench_kill_loop.py --rounds 50 --workdir /tmp/kills
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))

from cluster_views import scheduler_view, worker_view  # noqa: E402

BOOK = (REPO / ".." / "shared" / "corpus" / "childrens-literature.epub").resolve()
CHAPTERS = (2, 3)  # 3,418 + 5,405 characters: ~60 chunks, ~12 synthesize tasks
ENGINE = "espeak"
BATCH_CHARS = 800  # several synthesize tasks per worker, so a kill finds one running


# --------------------------------------------------------------------------- runs on the cluster
def _kill_self_if_synthesizing(record: str, dask_worker=None) -> None:
    """Runs on a worker: if it executes a synthesize task, note it in *record* and SIGKILL this
    process.

    The worker checks and kills itself (not its nanny), so there is no race
    between seeing the task run and the kill.
    """
    running = [str(k) for k, ts in dask_worker.state.tasks.items()
               if ts.state == "executing" and "synthesize" in str(k)]  # fmt: skip
    if not running:
        return
    with open(record, "a") as f:
        f.write(
            json.dumps({"task": running[0], "pid": os.getpid(), "worker": str(dask_worker.name)})
            + "\n"
        )
    os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------------- one round (a child process)
def _stored(cache: Path) -> set[str]:
    from ebook2audio_dask.storage import ChunkStore

    return set(ChunkStore.make(str(cache)).list_sizes(ENGINE))


def _m4b_seconds(path: Path) -> float | None:
    try:
        from mutagen.mp4 import MP4

        return round(float(MP4(str(path)).info.length), 3)
    except Exception:  # noqa: BLE001 - a missing or unreadable file is a finding, not a crash
        return None


def one_round(work: Path, *, expected: list[str] | None, kill_at: float, limit: float) -> dict:
    """Convert the book on a fresh cluster, killing a synthesizing worker once (unless *expected* is
    None)."""
    from distributed import Client, LocalCluster

    import ebook2audio_dask as e2a

    cache, out = work / "chunks", work / "out"
    row: dict = {"killed": False}
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, resources={"GPU": 1},
                           host="127.0.0.1", dashboard_address=None)  # fmt: skip
    client = Client(cluster)
    results: list = []
    failure: list[str] = []

    def convert() -> None:
        try:
            results.extend(
                e2a.convert(
                    str(BOOK),
                    str(out),
                    client=client,
                    engine=ENGINE,
                    cache=str(cache),
                    chapters=CHAPTERS,
                    batch_chars=BATCH_CHARS,
                    progress=False,
                )
            )
        except BaseException as exc:  # noqa: BLE001 - reported in the row
            failure.append(f"{type(exc).__name__}: {exc}")

    start = time.monotonic()
    thread = threading.Thread(target=convert, daemon=True)
    thread.start()
    if expected is not None:
        want = max(1, int(kill_at * len(expected)))
        record = work / "kill.jsonl"
        while thread.is_alive() and not row["killed"]:
            if len(_stored(cache)) < want:
                time.sleep(0.02)
                continue
            for address in list(client.scheduler_info()["workers"]):
                client.run(
                    _kill_self_if_synthesizing, str(record), workers=[address], on_error="return"
                )
                if record.exists():
                    row.update(
                        json.loads(record.read_text().splitlines()[0]),
                        killed=True,
                        kill_at_s=round(time.monotonic() - start, 2),
                        stored_at_kill=len(_stored(cache)),
                        scheduler_noticed=_gone(client, address),
                    )
                    break
            else:
                time.sleep(0.01)
    thread.join(max(0.0, limit - (time.monotonic() - start)))
    wall = time.monotonic() - start
    row["wall_s"] = round(wall, 2)
    row["stalled"] = thread.is_alive()
    stored = _stored(cache)
    row["stored"] = len(stored)
    if row["stalled"]:
        try:
            view = client.run_on_scheduler(scheduler_view)
            workers = client.run(worker_view, on_error="return")
        except Exception as exc:  # noqa: BLE001 - a report, not a check
            view, workers = {"error": repr(exc)}, {}
        dump = work / "stall.json"
        dump.write_text(json.dumps({"scheduler": view, "workers": workers}, indent=1, default=str))
        by_state: dict[str, int] = {}
        for state, *_ in (view.get("tasks") or {}).values():
            by_state[state] = by_state.get(state, 0) + 1
        unfinished = [(k, v) for k, v in (view.get("tasks") or {}).items()
                      if v[0] not in ("memory", "released", "forgotten")]  # fmt: skip
        row["stall"] = {
            "dump": str(dump),
            "tasks_by_state": by_state,
            "unfinished_count": len(unfinished),
            # each task's cluster_views.TASK_FIELDS; all of them in the dump
            "unfinished": dict(unfinished[:60]),
            "workers": view.get("workers"),
            "unrunnable": view.get("unrunnable"),
            "queued": view.get("queued"),
        }
    else:
        if failure:
            row["error"] = failure[0][:500]
        r = results[0] if results else None
        row["ok"] = bool(r and r.ok)
        if r is not None and not r.ok:
            row["error"] = r.error
        report = (r.report if r else None) or {}
        totals = report.get("totals") or {}
        row["unique_chunks"] = totals.get("unique_chunks")
        row["audio_s"] = totals.get("audio_s")
        m4b = Path(r.output) if r is not None and r.output else None
        row["m4b"] = bool(m4b and m4b.is_file())
        row["m4b_s"] = _m4b_seconds(m4b) if row["m4b"] else None
        row["duration_ok"] = (row["m4b_s"] is not None and row["audio_s"] is not None
                              and abs(row["m4b_s"] - row["audio_s"]) < 0.25)  # fmt: skip
    dead: set[str] = set()
    for letters in out.glob("*.failures.jsonl"):
        for line in letters.read_text(encoding="utf-8").splitlines():
            if line.strip():
                dead.add(json.loads(line)["chunk"])
    row["dead_lettered"] = len(dead)
    if expected is None:
        row["keys"] = sorted(stored)
    else:
        lost = sorted(set(expected) - stored - dead)
        # "lost" is judged after a run; a stalled one only says what was missing when it was given
        # up
        row["missing_at_stall" if row["stalled"] else "chunks_lost"] = len(lost)
        if lost and not row["stalled"]:
            row["lost"] = lost[:20]
        if row.get("unique_chunks") is not None and row["unique_chunks"] != len(expected):
            row["plan_mismatch"] = (
                f"report says {row['unique_chunks']} unique chunks, "
                f"the fault-free run stored {len(expected)}"
            )
    if row["stalled"]:
        sys.stdout.write(json.dumps(row, default=str) + "\n")
        sys.stdout.flush()
        os._exit(0)  # a stalled conversion thread may never let the cluster close
    client.close()
    cluster.close()
    return row


def _gone(client, address: str, timeout: float = 30.0) -> bool:
    """Wait until the scheduler has dropped *address* (the killed worker); False if it never did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if address not in client.scheduler_info()["workers"]:
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------- the parent
def _child(args: list[str], timeout: float) -> dict:
    """Run one round in a fresh process (its own session, killed whole on a hard timeout)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, cwd=REPO, start_new_session=True, text=True
        )
        try:
            stdout, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"stalled": True, "hard_timeout": True, "wall_s": round(timeout, 1)}
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the cluster's processes, if any were left
            except (ProcessLookupError, PermissionError):
                pass
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"crashed": True, "rc": proc.returncode, "stderr": stderr[-2000:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds with a kill (default 20; 2 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="2 rounds (a smoke test)")
    parser.add_argument(
        "--kill-at", type=float, default=0.3, help="fraction of the chunks stored before the kill"
    )
    parser.add_argument(
        "--stall-factor", type=float, default=10.0, help="stall limit, × the fault-free wall"
    )
    parser.add_argument(
        "--min-limit", type=float, default=60.0, help="smallest stall limit, seconds"
    )
    parser.add_argument(
        "--workdir", default=None, help="keep each round's store, output and stall dump here"
    )
    parser.add_argument(
        "--round", dest="child", default=None, help=argparse.SUPPRESS
    )  # child mode: its folder
    parser.add_argument(
        "--expected", default=None, help=argparse.SUPPRESS
    )  # child: file of chunk keys
    parser.add_argument("--limit", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        expected = json.loads(Path(args.expected).read_text()) if args.expected else None
        row = one_round(
            Path(args.child), expected=expected, kill_at=args.kill_at, limit=args.limit or 600.0
        )
        print(json.dumps(row, default=str), flush=True)
        return 0

    if not BOOK.is_file():
        print(f"error: input book not found: {BOOK}", file=sys.stderr)
        return 1
    import ebook2audio_dask as e2a

    rounds = args.rounds or (2 if args.quick else 20)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="e2a-kill-loop-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        ref_dir = work / "reference"
        shutil.rmtree(ref_dir, ignore_errors=True)
        ref_dir.mkdir()
        ref = _child(["--round", str(ref_dir), "--limit", "900"], timeout=1200)
        if not ref.get("ok") or not ref.get("keys"):
            print(json.dumps({"reference": ref}, default=str), flush=True)
            print("error: the fault-free reference run failed", file=sys.stderr)
            return 1
        keys = ref.pop("keys")
        (work / "expected.json").write_text(json.dumps(keys))
        limit = max(args.min_limit, args.stall_factor * ref["wall_s"])
        print(
            json.dumps(
                {"reference": {**ref, "chunks": len(keys)}, "stall_limit_s": round(limit, 1)}
            ),
            flush=True,
        )
        rows = []
        for i in range(1, rounds + 1):
            folder = work / f"round-{i}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            row = _child(
                [
                    "--round",
                    str(folder),
                    "--expected",
                    str(work / "expected.json"),
                    "--limit",
                    str(limit),
                    "--kill-at",
                    str(args.kill_at),
                ],
                timeout=limit + 180,
            )
            row = {"round": i, **row}
            rows.append(row)
            print(json.dumps(row, default=str), flush=True)
        walls = [r["wall_s"] for r in rows if not r.get("stalled") and "wall_s" in r]
        summary = {
            "summary": True,
            "rounds": rounds,
            "kills": sum(1 for r in rows if r.get("killed")),
            "stalls": sum(1 for r in rows if r.get("stalled")),
            "chunks_lost": sum(r.get("chunks_lost") or 0 for r in rows),
            "books_failed": sum(1 for r in rows if not r.get("stalled") and not r.get("ok")),
            "bad_m4b": sum(
                1
                for r in rows
                if not r.get("stalled") and not (r.get("m4b") and r.get("duration_ok"))
            ),
            "crashed": sum(1 for r in rows if r.get("crashed")),
            "dead_lettered": sum(r.get("dead_lettered") or 0 for r in rows),
            "median_wall_s": round(statistics.median(walls), 2) if walls else None,
            "max_wall_s": max(walls) if walls else None,
            "fault_free_wall_s": ref["wall_s"],
            "stall_limit_s": round(limit, 1),
            "chunks": len(keys),
            "chars": e2a.read_book(str(BOOK)).select(CHAPTERS).chars,
            "book": BOOK.name,
            "chapters": list(CHAPTERS),
            "engine": ENGINE,
            "workdir": str(work) if args.workdir else None,
        }
        print(json.dumps(summary), flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
