"""Faults on a real external cluster: what a killed worker, scheduler or client costs.

Every conversion runs as the CLI (a subprocess, ``--scheduler ADDRESS``) on a
fresh real cluster: a ``dask scheduler`` and two ``dask worker --resources
GPU=1 --nthreads 1`` processes with their nannies (the cluster helper of
``tests/test_faults.py``).  Each worker loads a preload module that logs every
chunk written to the chunk store, so the synthesis work of every process is
counted, including work no report sees (a killed task, a dead client's tasks).

(a) uninterrupted: wall time and chunks/characters synthesised.
(b) worker killed twice: each worker process (not its nanny) SIGKILLed while it
    runs a synthesize task, at 25 % and 60 % of the chunks.  Completed? chunks
    lost?  Audio identical to an uninterrupted run of the same engine?  This
    part uses a tiny random Coqui VITS (one text per call, CPU): chunks are
    seeded by their content key, so a chunk spoken again elsewhere gives the
    same bytes (Piper draws unseeded noise, eSpeak NG depends on what its
    process spoke before: neither can be compared byte for byte).
(c) scheduler SIGKILLed at 50 % of the chunks; the CLI gives up; a new cluster
    and the same command again.
(d) client (the CLI's process group) SIGKILLed at 50 %; the same command again
    at once, on the same cluster.

Ratios: wall = (run 1 until the kill + rerun) / uninterrupted; work = chunks
(characters) written to the store over both runs / unique chunks (characters
of the unique chunks).  (a), (c) and (d) use Piper (the default English voice,
as the other benchmarks), (b) the tiny VITS for both its runs.

Prints one JSON line.  ``--quick``: one short chapter (smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))
BOOK = (REPO / ".." / "shared" / "corpus" / "childrens-literature.epub").resolve()
FULL_CHAPTERS = (2, 3, 4)  # 18,693 characters
QUICK_CHAPTERS = (2,)  # 3,418 characters
BATCH_CHARS = 400
TIMEOUT = 900


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def plan(engine: str, model: str | None, chapters) -> tuple[dict[str, int], str]:
    """{unique chunk key: characters} of the book as the pipeline plans it, and the voice."""
    from ebook2audio_dask.pipeline.options import ConvertOptions
    from ebook2audio_dask.pipeline.tasks import parse_task, plan_task

    options = ConvertOptions(output="unused", engine=engine, model=model, chapters=tuple(chapters))
    p = plan_task(parse_task(str(BOOK), False, None), options.plan_request())
    return {c.key: len(c.text) for c in p.chunks}, p.spec.voice


class Bench:
    def __init__(self, work: Path, chapters, vits: Path):
        from test_faults import PRELOAD

        self.work = work
        self.chapters = chapters
        self.vits = vits
        self.preload = work / "e2a_faults_preload.py"
        self.preload.write_text(PRELOAD, encoding="utf-8")
        self.log = work / "writes.log"
        self.n = 0

    def cluster(self):
        from test_faults import Cluster

        self.n += 1
        return Cluster(self.work / f"cluster-{self.n}", self.log, self.preload)

    def args(self, engine: str, out: Path, store: Path, address: str) -> list[str]:
        extra = ["--model", str(self.vits)] if engine == "coqui" else []
        return [
            "convert",
            str(BOOK),
            "-o",
            str(out),
            "--chapters",
            ",".join(map(str, self.chapters)),
            "--engine",
            engine,
            *extra,
            "--batch-chars",
            str(BATCH_CHARS),
            "--cache",
            str(store),
            "--scheduler",
            address,
            "--no-progress",
        ]

    def start(self, args: list[str]) -> subprocess.Popen:
        from test_faults import start_cli

        return start_cli(args)

    def run(self, args: list[str]) -> dict:
        """The CLI to its end: {wall_s, rc, stderr tail}."""
        load = loadavg()
        t0 = time.perf_counter()
        proc = self.start(args)
        try:
            _, err = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return {
            "wall_s": round(time.perf_counter() - t0, 2),
            "rc": proc.returncode,
            "loadavg_before": load,
            "stderr": err[-600:],
        }

    def writes(self, store: Path) -> list[str]:
        from test_faults import logged_writes

        return logged_writes(self.log, store)

    def stored(self, store: Path, engine: str) -> int:
        from test_faults import stored_chunks

        return len(stored_chunks(store, engine))

    @staticmethod
    def report(out: Path) -> dict:
        found = list(out.glob("*.report.json"))
        return json.loads(found[0].read_text()) if found else {}

    def wait_stored(self, proc: subprocess.Popen, store: Path, engine: str, n: int) -> None:
        deadline = time.monotonic() + TIMEOUT
        while self.stored(store, engine) < n:
            if proc.poll() is not None:
                raise SystemExit(
                    f"the conversion ended before {n} chunks were stored: "
                    f"{proc.stderr.read()[-800:]}"
                )
            if time.monotonic() > deadline:
                raise SystemExit(f"fewer than {n} chunks stored after {TIMEOUT} s")
            time.sleep(0.05)

    def work_done(self, store: Path, sizes: dict[str, int]) -> dict:
        keys = self.writes(store)
        unique_chars = sum(sizes.values())
        chars = sum(sizes.get(k, 0) for k in keys)
        return {
            "chunk_writes": len(keys),
            "distinct_chunks": len(set(keys)),
            "chars_written": chars,
            "work_ratio": round(len(keys) / len(sizes), 3),
            "chars_ratio": round(chars / unique_chars, 3),
        }

    # ------------------------------------------------------------------ (a)
    def uninterrupted(self, engine: str, sizes: dict[str, int], tag: str) -> dict:
        store, out = self.work / f"store-{tag}", self.work / f"out-{tag}"
        cluster = self.cluster()
        try:
            r = self.run(self.args(engine, out, store, cluster.address))
        finally:
            cluster.close()
        if r["rc"] != 0:
            raise SystemExit(f"uninterrupted {engine} run failed: {r['stderr']}")
        t = self.report(out)["totals"]
        return {
            **r,
            **self.work_done(store, sizes),
            "unique_chunks": t["unique_chunks"],
            "audio_s": t["audio_s"],
            "synth_s": t["synth_s"],
            "store": str(store),
            "out": str(out),
        }

    # ------------------------------------------------------------------ (b)
    def worker_kill(self, sizes: dict[str, int], reference: dict) -> dict:
        from test_faults import kill_busy_worker, stored_chunks

        from ebook2audio_dask.audio import decode_to_pcm

        store, out = self.work / "store-b", self.work / "out-b"
        cluster = self.cluster()
        killed = []
        try:
            load = loadavg()
            t0 = time.perf_counter()
            proc = self.start(self.args("coqui", out, store, cluster.address))
            try:
                for share in (0.25, 0.60):
                    self.wait_stored(proc, store, "coqui", int(share * len(sizes)))
                    victim = kill_busy_worker(
                        cluster, proc, store, spare={k["name"] for k in killed}
                    )
                    victim["at_s"] = round(time.perf_counter() - t0, 2)
                    killed.append(victim)
                _, err = proc.communicate(timeout=TIMEOUT)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            wall = time.perf_counter() - t0
        finally:
            cluster.close()
        ref_chunks, chunks = (
            stored_chunks(Path(reference["store"]), "coqui"),
            stored_chunks(store, "coqui"),
        )
        same = sum(
            1
            for k, p in chunks.items()
            if k in ref_chunks and p.read_bytes() == ref_chunks[k].read_bytes()
        )
        report = self.report(out)
        totals = report.get("totals", {})
        m4b, ref_m4b = next(out.glob("*.m4b"), None), next(Path(reference["out"]).glob("*.m4b"))
        identical_audio = False
        if m4b is not None:
            rate = report["sample_rate"]
            a, b = decode_to_pcm(ref_m4b, rate), decode_to_pcm(m4b, rate)
            identical_audio = len(a) == len(b) and bool((a == b).all())
        return {
            "wall_s": round(wall, 2),
            "loadavg_before": load,
            "rc": proc.returncode,
            "stderr": err[-600:],
            "completed": proc.returncode == 0 and m4b is not None,
            "kills": [{k: v for k, v in victim.items() if k != "address"} for victim in killed],
            "chunks_lost": len(set(sizes) - set(chunks)),
            "chunks_failed": totals.get("chunks_failed", 0),
            "identical_chunks": same,
            "unique_chunks": len(sizes),
            "identical_audio": identical_audio and same == len(sizes),
            "wall_ratio": round(wall / reference["wall_s"], 3),
            **self.work_done(store, sizes),
        }

    # ------------------------------------------------------------------ (c) and (d)
    def killed_then_rerun(
        self, what: str, engine: str, sizes: dict[str, int], reference: dict
    ) -> dict:
        """Kill the scheduler or the client at 50 % of the chunks, then run the same command
        again."""
        store, out = self.work / f"store-{what}", self.work / f"out-{what}"
        cluster = self.cluster()
        result: dict = {}
        try:
            load = loadavg()
            t0 = time.perf_counter()
            proc = self.start(self.args(engine, out, store, cluster.address))
            try:
                self.wait_stored(proc, store, engine, len(sizes) // 2)
                if what == "scheduler":
                    cluster.kill_scheduler()
                else:
                    os.killpg(proc.pid, signal.SIGKILL)
                until_kill = time.perf_counter() - t0
                result["stored_at_kill"] = self.stored(store, engine)
                _, err = proc.communicate(timeout=TIMEOUT)
                result["cli_exit_after_kill_s"] = round(time.perf_counter() - t0 - until_kill, 2)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            result.update(
                first_rc=proc.returncode,
                first_stderr=err[-400:],
                until_kill_s=round(until_kill, 2),
                loadavg_before=load,
            )
            if what == "scheduler":
                cluster.close()  # what is left of it: the workers leave on their own
                result["stored_before_rerun"] = self.stored(store, engine)
                cluster = self.cluster()
            else:
                result["stored_before_rerun"] = self.stored(store, engine)
            rerun = self.run(self.args(engine, out, store, cluster.address))
            if what == "client":
                from test_faults import scheduler_holds

                # tasks that were executing when the dead client's books were released
                # run to their end, then go: wait up to 15 s for the scheduler to be empty
                deadline = time.monotonic() + 15
                while True:
                    held = cluster.client.run_on_scheduler(scheduler_holds)
                    if not (held["tasks"] or held["variables"]) or time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
                result["held_15s_after_rerun"] = {
                    "tasks": len(held["tasks"]),
                    "variables": len(held["variables"]),
                    "names": held["tasks"][:5],
                }
        finally:
            cluster.close()
        if rerun["rc"] != 0:
            raise SystemExit(f"{what}: the rerun failed: {rerun['stderr']}")
        t = self.report(out)["totals"]
        total = result["until_kill_s"] + rerun["wall_s"]
        return {
            **result,
            "rerun_wall_s": rerun["wall_s"],
            "rerun_loadavg_before": rerun["loadavg_before"],
            "rerun_from_cache": t["chunks_from_cache"],
            "rerun_synthesized": t["chunks_synthesized"],
            "unique_chunks": t["unique_chunks"],
            "wall_s": round(total, 2),
            "wall_ratio": round(total / reference["wall_s"], 3),
            # as the user lives it: run 1 until the CLI gave up, then the rerun
            "wall_ratio_with_exit": round(
                (total + result["cli_exit_after_kill_s"]) / reference["wall_s"], 3
            ),
            **self.work_done(store, sizes),
        }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short chapter (smoke test)")
    parser.add_argument("--engine", default="piper", help="engine of (a), (c), (d) (default piper)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (printed)")
    args = parser.parse_args(argv)
    chapters = QUICK_CHAPTERS if args.quick else FULL_CHAPTERS
    import logging

    logging.getLogger("distributed").setLevel(
        logging.CRITICAL
    )  # our monitoring client outlives a scheduler
    from coqui_models import build_tiny_vits

    work = Path(tempfile.mkdtemp(prefix="e2a-bench-faults-"))
    try:
        vits = build_tiny_vits(work / "vits", seed=1)
        bench = Bench(work, chapters, vits)
        sizes, voice = plan(args.engine, None, chapters)
        vits_sizes, _ = plan("coqui", str(vits), chapters)
        out: dict = {
            "input": {
                "book": BOOK.name,
                "chapters": list(chapters),
                "chars": sum(sizes.values()),
                "batch_chars": BATCH_CHARS,
                "workers": 2,
            },
            "engines": {
                "timing": f"{args.engine} {voice}",
                "identity": "coqui tiny random VITS (CPU, batch 1)",
            },
        }
        t0 = time.perf_counter()
        out["uninterrupted"] = bench.uninterrupted(args.engine, sizes, "a")
        out["scheduler_kill"] = bench.killed_then_rerun(
            "scheduler", args.engine, sizes, out["uninterrupted"]
        )
        out["client_kill"] = bench.killed_then_rerun(
            "client", args.engine, sizes, out["uninterrupted"]
        )
        out["vits_uninterrupted"] = bench.uninterrupted("coqui", vits_sizes, "vits")
        out["worker_kill"] = bench.worker_kill(vits_sizes, out["vits_uninterrupted"])
        out["bench_wall_s"] = round(time.perf_counter() - t0, 1)
        for part in out.values():  # temporary paths go; stderr tails stay only where a run failed
            if isinstance(part, dict):
                part.pop("store", None)
                part.pop("out", None)
                if part.get("rc") == 0:
                    part.pop("stderr", None)
        print(json.dumps(out), flush=True)
    finally:
        if args.keep:
            print(f"work folder: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
