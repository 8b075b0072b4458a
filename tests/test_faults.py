"""Faults on a real multi-process cluster: a worker, the scheduler or the client SIGKILLed mid-job.

Every test runs a real ``dask scheduler`` and two ``dask worker --resources
GPU=1 --nthreads 1`` processes (each with its nanny), as separate OS processes,
and the CLI as a subprocess, like ``tests/test_external_cluster.py``.

Engine: a tiny random Coqui VITS (``coqui_models.build_tiny_vits``) run on the
CPU one text at a time (``coqui.batch-size: 1``).  Its chunks are seeded from
their content keys, so a chunk spoken again in another process, after other
chunks, gives the same bytes: this is what lets the worker test demand
*identical* audio.  eSpeak NG does not (its pitch flutter's phase carries
from one utterance to the next in a process; see docs/engines.md), and Piper
draws unseeded noise.  The tiny model is also slow enough (~700
chars/s per worker here) for a kill to land in the middle of synthesis.

Work is measured, not guessed: every worker loads a preload module (written
by these tests) that appends one line per chunk written to the chunk store, so
the tests count every chunk synthesised by every process, including work done
by a dead run's tasks that no report sees.

Each test runs once more when it fails (``pytest-rerunfailures``, reported
as RERUN in the summary, as distributed's own suite does for its
multi-process tests): once in CI, under load, the worker test found its job
stalled after the first kill, which six runs on an oversubscribed machine
(4 busy processes on 2 cores) did not repeat.  A stall now prints the
scheduler's and the workers' task states, the workers' thread stacks and
the cluster's logs, so a second one can be diagnosed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
from cluster_views import TASK_FIELDS, scheduler_view, worker_view
from helpers import ROOT, check_m4b_against_report, load_report, wait_for

pytestmark = pytest.mark.flaky(reruns=1, reruns_delay=5)

BOOK = "childrens-literature.epub"
STEM = "childrens-literature"
CHAPTERS = "2-3"  # 8,765 characters, 71 unique chunks, 28 synthesize tasks of <= 400 chars
BATCH_CHARS = 400
N_WORKERS = 2

#: Worker and CLI settings: the tiny VITS on the CPU, one text per engine call
#: (a padded batch's floats depend on its batch-mates; one at a time does not).
ENGINE_ENV = {"DASK_EBOOK2AUDIO__COQUI__BATCH_SIZE": "1", "DASK_EBOOK2AUDIO__COQUI__DEVICE": "cpu"}

#: Worker preload: log every chunk written to the store (after the write).
PRELOAD = """
import faulthandler
import os
import signal
import sys
import time

# SIGUSR1 prints every thread's stack into the process's log (a stalled test's evidence)
faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)


def dask_setup(worker):
    from ebook2audio_dask.storage.chunkstore import ChunkStore

    log = os.environ["E2A_FAULTS_WRITE_LOG"]
    if getattr(ChunkStore.write, "_e2a_faults", False):
        return
    original = ChunkStore.write

    def write(self, engine, key, wav):
        original(self, engine, key, wav)
        with open(log, "a") as f:  # one short O_APPEND write per line: lines never interleave
            f.write(f"{time.time():.3f} {os.getpid()} {self.url} {key}\\n")

    write._e2a_faults = True
    ChunkStore.write = write
"""


# --------------------------------------------------------------------------- helpers
# The functions below that run on the workers and the scheduler travel by value:
# those processes cannot import this test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _executing_synthesis(dask_worker) -> list[str]:
    """Runs on a worker: the synthesize tasks it is executing right now."""
    return [str(k) for k, ts in dask_worker.state.tasks.items()
            if ts.state == "executing" and str(k).startswith("synthesize-")]  # fmt: skip


def _kill_self_if_synthesizing(record: str, dask_worker=None) -> None:
    """Runs on a worker: if it is executing a synthesize task, note it in *record* and SIGKILL this
    process."""
    running = _executing_synthesis(dask_worker)
    if not running:
        return
    line = json.dumps({"name": dask_worker.name, "pid": os.getpid(), "task": running[0]})
    with open(record, "a") as f:
        f.write(line + "\n")
    os.kill(os.getpid(), signal.SIGKILL)


def _suspicious(dask_scheduler) -> dict[str, int]:
    """Runs on the scheduler: tasks that were running on a worker that died."""
    return {str(k): ts.suspicious for k, ts in dask_scheduler.tasks.items() if ts.suspicious}


def scheduler_holds(dask_scheduler) -> dict[str, list[str]]:
    """Runs on the scheduler: every task it still holds, and every named Variable."""
    variables = dask_scheduler.extensions.get("variables")
    return {
        "tasks": sorted(str(k) for k in dask_scheduler.tasks),
        "variables": sorted(getattr(variables, "variables", {}) or {}),
    }


class Cluster:
    """``dask scheduler`` + *n* ``dask worker`` processes (nanny + worker each), GPU=1, 1 thread."""

    def __init__(self, folder: Path, write_log: Path, preload: Path, n_workers: int = N_WORKERS):
        from distributed import Client

        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tmp").mkdir(exist_ok=True)
        self.folder = folder
        self.n_workers = n_workers
        # TMPDIR: the merge's temporary files (left behind when its worker is SIGKILLed) stay in
        # here
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", E2A_FAULTS_WRITE_LOG=str(write_log),
                        TMPDIR=str(folder / "tmp"), **ENGINE_ENV)  # fmt: skip
        self.procs: dict[str, subprocess.Popen] = {}
        self._logs = []
        sched_file = folder / "scheduler.json"
        try:
            self._start(
                "scheduler",
                [
                    "distributed.cli.dask_scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--no-dashboard",
                    "--scheduler-file",
                    str(sched_file),
                ],
            )
            wait_for(
                lambda: sched_file.exists() and sched_file.stat().st_size > 0, 60, "the scheduler"
            )
            self.address = json.loads(sched_file.read_text())["address"]
            self.names = [f"gpu-{i}" for i in range(n_workers)]
            for i in range(n_workers):
                self._start(
                    f"gpu-{i}",
                    [
                        "distributed.cli.dask_worker",
                        "--scheduler-file",
                        str(sched_file),
                        "--host",
                        "127.0.0.1",
                        "--nthreads",
                        "1",
                        "--nworkers",
                        "1",
                        "--no-dashboard",
                        "--resources",
                        "GPU=1",
                        "--preload",
                        str(preload),
                        "--name",
                        f"gpu-{i}",
                    ],
                )
            self.client = Client(self.address, timeout=60)
            self.client.wait_for_workers(n_workers, timeout=120)
        except BaseException:
            self.close()
            raise

    def _start(self, name: str, args: list[str]) -> None:
        log = open(self.folder / f"{name}.log", "a")  # noqa: SIM115 - closed by close()
        self._logs.append(log)
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )

    def workers(self) -> dict[str, dict]:
        return self.client.scheduler_info(n_workers=-1)["workers"]

    def kill_scheduler(self) -> None:
        os.kill(self.procs["scheduler"].pid, signal.SIGKILL)

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            try:
                client.close(timeout=10)
            except Exception:  # noqa: BLE001 - the scheduler may be dead already
                pass
        for p in self.procs.values():
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for log in self._logs:
            log.close()


@pytest.fixture(scope="module")
def vits(tmp_path_factory) -> Path:
    """A tiny random single-speaker VITS model folder."""
    pytest.importorskip("TTS", reason="coqui-tts is part of the dev install (.ci/run installs it)")
    from coqui_models import build_tiny_vits

    return build_tiny_vits(
        tmp_path_factory.mktemp("faults-vits"), seed=1
    )  # seed 1: loud enough for check_m4b_against_report


@pytest.fixture
def setup(tmp_path, vits):
    """(preload module, write log) for a test's clusters."""
    preload = tmp_path / "e2a_faults_preload.py"
    preload.write_text(PRELOAD, encoding="utf-8")
    return preload, tmp_path / "writes.log"


def kill_busy_worker(
    cluster: Cluster,
    proc: subprocess.Popen,
    store: Path,
    spare: set[str] = frozenset(),
    engine: str = "coqui",
) -> dict:
    """SIGKILL a worker *process* (not its nanny) while it executes a synthesize task.

    Workers named in *spare* are left alone.  Returns once the scheduler has
    seen the task die with its worker (the task is "suspicious") and the
    nanny's new worker process has joined under the same name: ``{name,
    address, pid, task, stored (chunks in the store at the kill), suspicious}``.
    """
    record = store.parent / f"{store.name}.kills.jsonl"
    done = len(record.read_text().splitlines()) if record.exists() else 0
    victim = None
    while victim is None:
        assert proc.poll() is None, "the conversion ended before a worker could be killed"
        for address, worker in cluster.workers().items():
            if worker["name"] in spare:
                continue
            # the worker checks and kills itself: no race between seeing the task run and the kill
            cluster.client.run(
                _kill_self_if_synthesizing, str(record), workers=[address], on_error="ignore"
            )
            lines = record.read_text().splitlines() if record.exists() else []
            if len(lines) > done:
                victim = dict(
                    json.loads(lines[-1]), address=address, stored=len(stored_chunks(store, engine))
                )
                break
        else:
            time.sleep(0.02)

    def noticed():
        return cluster.client.run_on_scheduler(_suspicious).get(victim["task"])

    victim["suspicious"] = wait_for(noticed, 30, "the scheduler to notice the dead worker")

    def replaced():
        workers = cluster.workers()
        return victim["address"] not in workers and sorted(
            w["name"] for w in workers.values()
        ) == sorted(cluster.names)

    wait_for(replaced, 60, "the nanny's new worker")
    return victim


def _plan(corpus: Path, vits: Path):
    """(unique chunk keys, most chunks in one synthesize task) of the test book, planned here."""
    from ebook2audio_dask.pipeline.graph import MIN_BATCH_CHARS
    from ebook2audio_dask.pipeline.options import ConvertOptions
    from ebook2audio_dask.pipeline.tasks import parse_task, plan_task

    first, last = (int(x) for x in CHAPTERS.split("-"))
    options = ConvertOptions(output="unused", engine="coqui", model=str(vits),
                             chapters=tuple(range(first, last + 1)))  # fmt: skip
    plan = plan_task(parse_task(str(corpus / BOOK), False, None), options.plan_request())
    batches = plan.batches(BATCH_CHARS, slots=N_WORKERS, min_chars=MIN_BATCH_CHARS)
    return {c.key for c in plan.chunks}, max(len(b) for b in batches)


def _args(corpus: Path, vits: Path, out: Path, store: Path, address: str) -> list[str]:
    return [
        "convert",
        str(corpus / BOOK),
        "-o",
        str(out),
        "--chapters",
        CHAPTERS,
        "--engine",
        "coqui",
        "--model",
        str(vits),
        "--batch-chars",
        str(BATCH_CHARS),
        "--cache",
        str(store),
        "--scheduler",
        address,
        "--no-progress",
    ]


def start_cli(args: list[str]) -> subprocess.Popen:
    """The CLI in its own process group (so it can be SIGKILLed whole), output in pipes."""
    return subprocess.Popen([sys.executable, "-m", "ebook2audio_dask", *args], cwd=str(ROOT),
                            env=dict(os.environ, **ENGINE_ENV), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip


def _run_cli(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ebook2audio_dask", *args], cwd=str(ROOT),
                          env=dict(os.environ, **ENGINE_ENV), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def stored_chunks(store: Path, engine: str = "coqui") -> dict[str, Path]:
    """Chunks at their final names in the store: key -> file."""
    base = store / engine
    if not base.exists():
        return {}
    return {p.stem: p for p in base.rglob("*.wav") if not p.name.startswith(".")}


def logged_writes(log: Path, store: Path) -> list[str]:
    """Keys of every chunk any worker wrote into *store* (one per write, repeats included)."""
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        _, _, url, key = line.split(" ")
        if Path(url) == store:
            out.append(key)
    return out


def _stall_report(cluster: Cluster | None) -> str:
    """What the cluster was doing, for a test that timed out waiting for it (a CI log is all there
    is)."""
    if cluster is None:
        return ""
    parts = []
    try:
        view = cluster.client.run_on_scheduler(scheduler_view)
        parts.append(f"scheduler tasks ({', '.join(TASK_FIELDS)}):")
        parts.extend(f"  {k}: {json.dumps(v)}" for k, v in view.pop("tasks").items())
        parts.append(f"scheduler: {json.dumps(view, default=str)}")
        for address, state in cluster.client.run(worker_view, on_error="return").items():
            parts.append(f"worker {address}: {state!r}")
    except Exception as exc:  # noqa: BLE001 - a report, not a check
        parts.append(f"cluster state unavailable ({exc!r})")
    try:  # the worker processes (children of the nannies) print their threads' stacks into the logs
        import psutil

        for p in cluster.procs.values():
            for child in psutil.Process(p.pid).children(recursive=True):
                if "spawn_main" in " ".join(
                    child.cmdline()
                ):  # a worker, not multiprocessing's resource tracker
                    child.send_signal(signal.SIGUSR1)
        time.sleep(2)
    except Exception as exc:  # noqa: BLE001 - a report, not a check
        parts.append(f"stacks unavailable ({exc!r})")
    for log in sorted(cluster.folder.glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()[-150:]
        parts.append(f"--- {log.name} (last {len(lines)} lines)\n" + "\n".join(lines))
    return "\n".join(parts)


def _wait_until_stored(store: Path, proc: subprocess.Popen, n: int, timeout: float = 240,
                       cluster: Cluster | None = None) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout
    while len(stored_chunks(store)) < n:
        assert proc.poll() is None, (
            f"the conversion ended before {n} chunks were stored:\n{proc.stderr.read()}"
        )
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)  # its stderr can be read to the end now
            _, stderr = proc.communicate()
            raise AssertionError(
                f"{len(stored_chunks(store))} of {n} chunks in the store after {timeout} s\n"
                f"CLI stderr:\n{stderr[-4000:]}\n{_stall_report(cluster)}"
            )
        time.sleep(0.05)


# --------------------------------------------------------------------------- faults
@pytest.mark.slow
def test_workers_killed_mid_synthesis_lose_no_chunk_and_change_no_sample(
    corpus, vits, setup, tmp_path
):
    """SIGKILL each worker process (not its nanny) while it runs a synthesize task.

    The nanny starts a new worker, the task runs again elsewhere; the book
    completes with every chunk, byte-identical to an uninterrupted run's, and
    no chunk is synthesised twice beyond the chunk each kill interrupted.
    """
    from ebook2audio_dask.audio import decode_to_pcm

    preload, log = setup
    keys, _ = _plan(corpus, vits)
    cluster = Cluster(tmp_path / "cluster", log, preload)
    try:
        # the reference: an uninterrupted run into its own store
        store_a, out_a = tmp_path / "store-a", tmp_path / "out-a"
        ref = _run_cli(_args(corpus, vits, out_a, store_a, cluster.address))
        assert ref.returncode == 0, ref.stderr

        store_b, out_b = tmp_path / "store-b", tmp_path / "out-b"
        proc = start_cli(_args(corpus, vits, out_b, store_b, cluster.address))
        killed: list[dict] = []
        try:
            for share in (0.15, 0.45):  # one kill per worker, early and half-way
                _wait_until_stored(store_b, proc, int(share * len(keys)), cluster=cluster)
                killed.append(
                    kill_busy_worker(cluster, proc, store_b, spare={k["name"] for k in killed})
                )
            stdout, stderr = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        assert proc.returncode == 0, stderr
        assert {k["name"] for k in killed} == {"gpu-0", "gpu-1"}
        assert all(k["suspicious"] >= 1 and k["stored"] < len(keys) for k in killed), killed
        new_pids = set(cluster.client.run(os.getpid).values())
        assert not new_pids & {k["pid"] for k in killed}
    finally:
        cluster.close()

    report_a = load_report(out_a / f"{STEM}.report.json")
    report_b = load_report(out_b / f"{STEM}.report.json")
    totals = report_b["totals"]
    # no chunk missing, none from a cache, every one synthesised by a task that finished
    assert totals["unique_chunks"] == len(keys) == report_a["totals"]["unique_chunks"]
    assert totals["chunks_from_cache"] == 0
    assert totals["chunks_synthesized"] == len(keys), totals
    assert totals.get("chunks_failed", 0) == 0 and not report_b.get("gaps")
    assert sum(report_b["chunks_per_worker"].values()) == len(keys)
    # the same chunk files, byte for byte
    a, b = stored_chunks(store_a), stored_chunks(store_b)
    assert set(a) == set(b) == keys
    differ = [k for k in keys if a[k].read_bytes() != b[k].read_bytes()]
    assert not differ, f"{len(differ)} of {len(keys)} chunks differ from the uninterrupted run's"
    # the same book: chapters, durations and decoded audio
    assert report_b["chapters"] == report_a["chapters"]
    assert totals["audio_s"] == report_a["totals"]["audio_s"]
    check_m4b_against_report(out_b / f"{STEM}.m4b", report_b, expect_cover=True)
    pcm_a = decode_to_pcm(out_a / f"{STEM}.m4b", report_a["sample_rate"])
    pcm_b = decode_to_pcm(out_b / f"{STEM}.m4b", report_b["sample_rate"])
    assert len(pcm_a) == len(pcm_b) and np.array_equal(pcm_a, pcm_b)
    # work: each chunk written once (a task run again skips what its first attempt stored)
    writes = logged_writes(log, store_b)
    assert set(writes) == keys
    assert len(writes) <= len(keys) + len(killed), (len(writes), len(keys), killed)


# --------------------------------------------------------------------------- the scheduler dies
@pytest.mark.slow
@pytest.mark.timeout(1200)  # its waits are hang guards sized for a busy machine
def test_scheduler_killed_mid_job_fails_cleanly_then_a_rerun_resumes(corpus, vits, setup, tmp_path):
    """SIGKILL the scheduler at ~40 % of the chunks: the CLI gives up (in under a minute on an
    idle machine; not timed here) with one error line and no output; the same command on a new
    cluster makes only the missing chunks."""
    preload, log = setup
    keys, most_per_task = _plan(corpus, vits)
    store, out = tmp_path / "store", tmp_path / "out"
    first = Cluster(tmp_path / "cluster-1", log, preload)
    try:
        proc = start_cli(_args(corpus, vits, out, store, first.address))
        try:
            _wait_until_stored(store, proc, int(0.4 * len(keys)), cluster=first)
            first.kill_scheduler()
            killed_at = time.monotonic()
            at_kill = len(stored_chunks(store))
            # a guard against a hang, not a speed limit: it gives up in well under a minute idle
            try:
                stdout, stderr = proc.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                pytest.fail(
                    "the CLI still runs 300 s after its scheduler died: it waits for it forever"
                )
            print(
                f"\nthe CLI gave up {time.monotonic() - killed_at:.0f} s after its scheduler died"
            )
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # the workers lose their scheduler too; let them finish what they were doing
        wait_for(
            lambda: all(p.poll() is not None for n, p in first.procs.items() if n != "scheduler"),
            60,
            "the workers to leave after their scheduler died",
        )
    finally:
        first.close()

    assert proc.returncode not in (0, None) and proc.returncode > 0, (proc.returncode, stderr)
    assert "Traceback" not in stderr, stderr
    # one error line for the book, whichever call met the dead scheduler first
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and BOOK in errors[0], stderr
    assert "lost the connection to the scheduler tcp://127.0.0.1:" in errors[0], stderr
    assert "run the same command again to resume" in errors[0], stderr
    assert not (out / f"{STEM}.m4b").exists() and not (out / f"{STEM}.report.json").exists()
    after_first = len(stored_chunks(store))
    assert at_kill <= after_first < len(keys)

    # the same command on a new cluster
    second = Cluster(tmp_path / "cluster-2", log, preload)
    try:
        rerun = _run_cli(_args(corpus, vits, out, store, second.address))
    finally:
        second.close()
    assert rerun.returncode == 0, rerun.stderr
    report = load_report(out / f"{STEM}.report.json")
    totals = report["totals"]
    assert totals["unique_chunks"] == len(keys)
    assert totals["chunks_from_cache"] == after_first >= at_kill > 0
    assert totals["chunks_synthesized"] == totals["unique_chunks"] - totals["chunks_from_cache"] > 0
    check_m4b_against_report(out / f"{STEM}.m4b", report, expect_cover=True)
    assert set(stored_chunks(store)) == keys
    # work over both runs: every chunk once, give or take what was in flight at the kill
    allowance = N_WORKERS * most_per_task
    assert after_first + totals["chunks_synthesized"] <= len(keys) + allowance
    writes = logged_writes(log, store)
    assert len(writes) <= len(keys) + allowance, (len(writes), len(keys), allowance)


# --------------------------------------------------------------------------- the client dies
@pytest.mark.slow
def test_client_killed_mid_job_then_a_rerun_on_the_same_cluster_resumes(
    corpus, vits, setup, tmp_path
):
    """SIGKILL the CLI (its whole process group) at ~40 %, the cluster staying up; run the
    same command again at once on the same cluster.

    Expected: the rerun completes from the chunks stored; the dead client's
    tasks are released (its queued synthesis does not go on for nobody, and
    nothing of it stays on the scheduler); over both runs each chunk is
    synthesised once, give or take the tasks in flight at the kill.
    """
    preload, log = setup
    keys, most_per_task = _plan(corpus, vits)
    store, out = tmp_path / "store", tmp_path / "out"
    cluster = Cluster(tmp_path / "cluster", log, preload)
    try:
        proc = start_cli(_args(corpus, vits, out, store, cluster.address))
        try:
            _wait_until_stored(store, proc, int(0.4 * len(keys)), cluster=cluster)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the CLI; the cluster is not in its process group
            proc.wait()
        at_kill = len(stored_chunks(store))
        assert not (out / f"{STEM}.m4b").exists()

        rerun = _run_cli(_args(corpus, vits, out, store, cluster.address))
        assert rerun.returncode == 0, rerun.stderr
        report = load_report(out / f"{STEM}.report.json")
        totals = report["totals"]
        assert totals["unique_chunks"] == len(keys)
        assert totals["chunks_from_cache"] >= at_kill > 0
        assert totals["chunks_synthesized"] == totals["unique_chunks"] - totals["chunks_from_cache"]
        check_m4b_against_report(out / f"{STEM}.m4b", report, expect_cover=True)
        assert set(stored_chunks(store)) == keys

        # Both runs are over: the scheduler should hold nothing of either.
        def empty():
            held = cluster.client.run_on_scheduler(scheduler_holds)
            return not held["tasks"] and not held["variables"]

        problems = []
        try:
            wait_for(empty, 15, "the scheduler to let go of both runs", interval=0.5)
        except TimeoutError:
            problems.append(
                _leak_message(
                    cluster.client.run_on_scheduler(scheduler_holds), "after both runs ended"
                )
            )
    finally:
        cluster.close()

    allowance = N_WORKERS * most_per_task
    writes = logged_writes(log, store)
    work = (
        f"work over both runs: {len(writes)} chunk writes for {len(keys)} unique chunks "
        f"({at_kill} stored at the kill, {totals['chunks_synthesized']} synthesised by the rerun; "
        f"allowed: + {allowance} in flight)"
    )
    if (
        at_kill + totals["chunks_synthesized"] > len(keys) + allowance
        or len(writes) > len(keys) + allowance
    ):
        problems.append(work)
    assert not problems, "\n".join(problems + [work])


@pytest.mark.slow
def test_ctrl_c_stops_the_job_on_an_external_cluster(corpus, vits, setup, tmp_path):
    """Ctrl-C (SIGINT) of the CLI at ~35 % on an external cluster stops the book there:
    the cluster does not go on synthesising it for nobody, nor keep its tasks."""
    preload, log = setup
    keys, most_per_task = _plan(corpus, vits)
    store, out = tmp_path / "store", tmp_path / "out"
    cluster = Cluster(tmp_path / "cluster", log, preload)
    try:
        proc = start_cli(_args(corpus, vits, out, store, cluster.address))
        try:
            _wait_until_stored(store, proc, int(0.35 * len(keys)), cluster=cluster)
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        at_exit = len(stored_chunks(store))
        assert proc.returncode not in (0, None), stderr
        assert "Traceback" not in stderr, stderr
        assert not (out / f"{STEM}.m4b").exists()
        time.sleep(10)  # long enough for the whole book to be synthesised if nothing stopped it
        later = len(stored_chunks(store))
        held = cluster.client.run_on_scheduler(scheduler_holds)
    finally:
        cluster.close()
    problems = []
    if held["tasks"] or held["variables"]:
        problems.append(_leak_message(held, "10 s after Ctrl-C"))
    if later > at_exit + N_WORKERS * most_per_task:
        problems.append(
            f"{later - at_exit} chunks were synthesised after the CLI had stopped "
            f"({at_exit} stored when it exited, {later} 10 s later, of {len(keys)})"
        )
    assert not problems, "\n".join(problems)


def _leak_message(held: dict, when: str) -> str:
    return (
        f"{when} the scheduler still holds {len(held['tasks'])} task(s) "
        f"({', '.join(held['tasks'][:2])}, ...) "
        f"and {len(held['variables'])} Variable(s) ({', '.join(held['variables'][:2])}, ...) "
        "of a client that is gone: its synthesize tasks are kept alive (and run) for nobody"
    )
