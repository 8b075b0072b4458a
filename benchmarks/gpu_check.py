"""GPU check (issue 15): Kokoro batched on a GPU, slots per GPU, GPU busy, Coqui batching,
placement.

One command, under 8 minutes on one GPU, writing its figures as one JSON
object (``--out``, and the last line of stdout)::

    python benchmarks/gpu_check.py --out gpu_check.json        # a GPU machine
    python benchmarks/gpu_check.py --quick          # any machine: CPU, tiny sizes, seconds
    python benchmarks/run.py --only gpu_check --gpu-json gpu_check.json   # into RESULTS.md

Sections (each one's numbers, or why it did not run, are in the JSON):

``kokoro``     the real Kokoro-82M architecture (``tests/kokoro_models.py``, ``size="full"``: 82 M
               parameters, random weights -- compute does not depend on their values -- with the
               duration predictor biased to ~3 frames per phoneme, as real speech) loaded through
               :class:`~ebook2audio_dask.engines.kokoro_torch.TorchKokoro`; the same texts
               (public-domain English, cut into 60-300 character chunks, one token per
               character) spoken (a) one text per forward pass and (b) in length buckets of up
               to ``batch_size`` (32 on a GPU), after a warm-up.  chars/s, audio seconds per
               wall second, b/a, and whether (a) and (b) agree (durations within 1 frame,
               waveform correlation).  GPU utilisation sampled by ``nvidia-smi`` every 100 ms
               while each runs.
``slots``      a :class:`~ebook2audio_dask.cluster.GPULocalCluster` of one worker on the first GPU
               with 1, 2, 4 and 8 slots (``--slots-per-gpu``): tasks of ~15 texts each (a synthesize
               task's size), each one engine call on the worker's one shared model; wall time from
               submitting all of them to the last result, after a warm-up task per slot; audio s per
               wall s and GPU utilisation.
``coqui``      the issue-3 figure never measured on a GPU: ``benchmarks/bench_coqui.py``'s
               standard-size VITS (random weights), one chunk per call vs batches of 16, through the
               coqui engine on the GPU.  Runs only where ``TTS`` (coqui-tts) imports.  XTTS speaks
               one text at a time (autoregressive GPT): it has no batching to measure.
``placement``  a GPULocalCluster over every GPU torch sees (``CUDA_VISIBLE_DEVICES`` per
               worker): each worker's environment, the one device torch shows it and its UUID,
               and where ``resources={"GPU": 1}`` tasks ran.

Without a GPU and without ``--quick`` it prints ``{"measured": false, ...}`` and exits 0
(``run.py`` then records "not measured").  ``--quick`` runs every section on the CPU with
the tiny Kokoro and tiny VITS in seconds (``tests/test_gpu_check.py`` does, so this never rots).

**The machine.**  A bare GPU machine with Python 3.12, CUDA torch, numpy and onnxruntime
(this workplace's image also has scipy, numba, transformers 5, torchaudio...) plus the
wheels :data:`WHEELS` lists (37 wheels, 23.4 MiB for CPython 3.12, x86-64).  Build the wheelhouse
here, in an ignored folder, and carry it::

    echo /.whl/ >> .git/info/exclude
    python benchmarks/gpu_check.py --wheels > /tmp/gpu-wheels.txt
    python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \\
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
        -d .whl -r /tmp/gpu-wheels.txt
    du -sh .whl                                    # must stay under 64 MiB with the tree

and run it there (carry ``.whl``)::

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \\
        && PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 \\
        python3 benchmarks/gpu_check.py --out $OUT/gpu_check.json

``--budget-s`` (default 420) is checked between sections: a section that would start
too late is skipped and says so, so the whole run stays under 8 minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _path in (str(REPO), str(REPO / "tests"), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

#: Wheels the GPU machine lacks (CPython 3.12, x86-64): ebook2audio_dask's imports, the kokoro
#: package and transformers 4.x (kokoro's ALBERT; the image's transformers 5 is shadowed), and
#: coqui-tts with the parts of its stack the image does not have.
WHEELS = (
    "dask==2026.8.0", "distributed==2026.8.0", "partd==1.4.2", "locket==1.0.0", "tblib==3.2.2",
    "zict==3.0.0", "tornado==6.6.1", "beautifulsoup4==4.15.0", "soupsieve==4.1.4",
    "tenacity==9.2.1", "pysbd==0.3.4", "num2words==0.5.14", "mutagen==1.48.1", "pypdf==7.1.1",
    "kokoro==0.9.4", "loguru==0.7.3", "transformers==4.57.6", "tokenizers==0.22.2",
    "huggingface-hub==0.36.2",
    "coqui-tts==0.28.0", "coqui-tts-trainer==0.4.0", "coqpit-config==0.2.5", "anyascii==0.3.3",
    "inflect==7.6.0", "typeguard==4.6.1", "more-itertools==11.2.1",
    "monotonic-alignment-search==0.2.1",
    "librosa==0.11.0", "soundfile==0.14.0", "cffi==2.1.1", "pycparser==3.12", "pooch==1.9.0",
    "platformdirs==4.14.9", "soxr==1.1.0", "audioread==3.1.0", "decorator==5.3.2",
)  # fmt: skip

#: Public-domain English (Dickens, *A Tale of Two Cities*, 1859): the texts spoken.
TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the "
    "age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the "
    "season of Light, it was the season of Darkness, it was the spring of hope, it was the winter "
    "of despair, we had everything before us, we had nothing before us, we were all going direct "
    "to Heaven, we were all going direct the other way. In short, the period was so far like the "
    "present period, that some of its noisiest authorities insisted on its being received, for "
    "good or for evil, in the superlative degree of comparison only. There were a king with a "
    "large jaw and a queen with a plain face, on the throne of England; there were a king with a "
    "large jaw and a queen with a fair face, on the throne of France. In both countries it was "
    "clearer than crystal to the lords of the State preserves of loaves and fishes, that things "
    "in general were settled for ever. It was the year of Our Lord one thousand seven hundred and "
    "seventy-five. Spiritual revelations were conceded to England at that favoured period, as at "
    "this. Mrs. Southcott had recently attained her five-and-twentieth blessed birthday, of whom "
    "a prophetic private in the Life Guards had heralded the sublime appearance by announcing "
    "that arrangements were made for the swallowing up of London and Westminster. Even the "
    "Cock-lane ghost had been laid only a round dozen of years, after rapping out its messages, "
    "as the spirits of this very year last past rapped out theirs. Mere messages in the earthly "
    "order of events had lately come to the English Crown and People, from a congress of British "
    "subjects in America: which, strange to relate, have proved more important to the human race "
    "than any communications yet received through any of the chickens of the Cock-lane brood."
)

SLOTS = (1, 2, 4, 8)


def _machine(device: str) -> dict:
    """The machine, in ``benchmarks/run.py``'s keys, with its GPU."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.lower().startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
        ram = next(
            round(int(line.split()[1]) / 2**20, 1) for line in lines if line.startswith("MemTotal:")
        )
    except (OSError, StopIteration):
        ram = None
    info = {
        "cpu": cpu, "cores": len(os.sched_getaffinity(0)), "ram_gb": ram,
        "python": platform.python_version(), "os": f"{platform.system()} {platform.release()}",
        "torch": torch.__version__, "cuda": torch.version.cuda,
    }  # fmt: skip
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpus"] = torch.cuda.device_count()
    return info


def chunks(n: int, seed: int = 0, longest: int = 300) -> list[str]:
    """*n* chunks of :data:`TEXT`'s sentences and clauses, 60 to *longest* characters."""
    import random

    pieces = [p.strip() for p in re.split(r"(?<=[.;:,])\s+", TEXT) if p.strip()]
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        target = rng.randint(60, longest)
        start = rng.randrange(len(pieces))
        text = ""
        for piece in pieces[start:] + pieces[:start]:
            if len(text) + len(piece) + 1 > target and text:
                break
            text = f"{text} {piece}".strip()
        out.append(text[:longest])
    return out


class GpuSampler:
    """``nvidia-smi`` utilisation samples (every *interval_ms*) while the block runs."""

    def __init__(self, interval_ms: int = 100):
        self.interval_ms = interval_ms
        self.samples: dict[int, list[int]] = {}
        self._proc = None
        self._thread = None

    def __enter__(self):
        smi = shutil.which("nvidia-smi")
        if smi:
            self._proc = subprocess.Popen(
                [
                    smi,
                    "--query-gpu=index,utilization.gpu",
                    "--format=csv,noheader,nounits",
                    f"--loop-ms={self.interval_ms}",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:
            try:
                index, util = (int(x) for x in line.split(","))
            except ValueError:
                continue
            self.samples.setdefault(index, []).append(util)

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._thread.join(timeout=5)

    def summary(self) -> dict | None:
        """Mean and samples of the busiest GPU (the one the run used), or None without
        nvidia-smi."""
        if not self.samples:
            return None
        index, values = max(self.samples.items(), key=lambda kv: sum(kv[1]) / len(kv[1]))
        return {
            "gpu": index,
            "mean_pct": round(sum(values) / len(values), 1),
            "samples": len(values),
        }


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _tokens(texts: list[str], vocab: dict) -> list[list[int]]:
    return [[vocab[ch] for ch in text.lower() if ch in vocab] for text in texts]


def _styles(n: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(256) * 0.2).astype(np.float32) for _ in range(n)]


def kokoro_section(model: tuple[str, dict], device: str, n_texts: int, longest: int) -> dict:
    """(a) one text per forward pass vs (b) length buckets, one model, the same texts."""
    import numpy as np

    from ebook2audio_dask.engines.kokoro_torch import SAMPLE_RATE, TorchKokoro

    path, config = model
    t0 = time.perf_counter()
    # one torch thread on the CPU (--quick): more fight other work for the cores
    tk = TorchKokoro(
        path, config, device=device, threads=1 if device == "cpu" else os.cpu_count() or 1
    )
    load_s = time.perf_counter() - t0
    texts = chunks(n_texts, longest=longest)
    tokens, styles = _tokens(texts, config["vocab"]), _styles(len(texts))
    chars = sum(len(t) for t in texts)
    tk.speak_detailed(tokens[:4], styles[:4], 1.0, batch_size=4)  # warm-up: kernels, allocator
    tk.speak_detailed(tokens[:1], styles[:1], 1.0, batch_size=1)
    runs = {}
    outputs = {}
    for label, size in (("single", 1), ("batched", tk.batch_size if device != "cpu" else 8)):
        with GpuSampler() as gpu:
            _sync(device)
            t0 = time.perf_counter()
            outputs[label] = tk.speak_detailed(tokens, styles, 1.0, batch_size=size)
            _sync(device)
            wall = time.perf_counter() - t0
        audio_s = sum(len(a) for a, _ in outputs[label]) / SAMPLE_RATE
        runs[label] = {
            "batch_size": size,
            "passes": len(tk.buckets([len(t) for t in tokens], size)),
            "wall_s": round(wall, 3),
            "chars_per_s": round(chars / wall, 1),
            "audio_s": round(audio_s, 1),
            "audio_x": round(audio_s / wall, 1),
            "gpu_util": gpu.summary(),
        }
    dur = [int(np.abs(a[1] - b[1]).max()) for a, b in zip(outputs["single"], outputs["batched"])]
    corr = [
        float(np.corrcoef(a[0], b[0])[0, 1])
        for a, b in zip(outputs["single"], outputs["batched"])
        if len(a[0]) == len(b[0])
    ]
    tk.close()
    return {
        "device": device, "load_s": round(load_s, 2), "texts": len(texts), "chars": chars,
        "single": runs["single"], "batched": runs["batched"],
        "ratio": round(runs["single"]["wall_s"] / runs["batched"]["wall_s"], 3),
        "agree": {"max_duration_diff_frames": max(dur), "same_length": len(corr), "texts": len(dur),
                  "min_correlation": round(min(corr), 6) if corr else None},
    }  # fmt: skip


def _slot_task(path: str, config: dict, device: str, tokens, styles) -> tuple:
    """One synthesize-sized task on a worker: this process's shared model speaks *tokens*."""
    import os as _os
    import time as _time

    from ebook2audio_dask.engines.kokoro_torch import LOADS, SAMPLE_RATE, TorchKokoro, pick_device

    start = _time.time()
    tk = TorchKokoro.shared(path, config, device=device)
    audio = tk.speak(tokens, styles, 1.0)
    return (sum(len(a) for a in audio) / SAMPLE_RATE, start, _time.time(), _os.getpid(),
            LOADS[(path, pick_device(device))])  # fmt: skip


def slots_section(
    model: tuple[str, dict],
    device: str,
    gpu: str,
    n_texts: int,
    longest: int,
    slots: tuple[int, ...],
    deadline: float,
    per_task: int = 15,
) -> list[dict]:
    """One worker on one GPU with N slots: throughput and GPU busy, per N.

    A task speaks *per_task* texts (15: about a synthesize task's 3000 characters).
    """
    from distributed import Client

    from ebook2audio_dask.cluster import GPULocalCluster

    path, config = model
    texts = chunks(n_texts, seed=1, longest=longest)
    tokens, styles = _tokens(texts, config["vocab"]), _styles(len(texts), seed=1)
    tasks = [
        (tokens[i : i + per_task], styles[i : i + per_task]) for i in range(0, len(texts), per_task)
    ]
    rows = []
    for n in slots:
        if time.time() > deadline:
            rows.append({"slots": n, "skipped": "time budget"})
            continue
        with (
            GPULocalCluster(
                [gpu],
                slots_per_gpu=n,
                threads_per_worker=1,
                resources={"GPU": 1},
                dashboard_address=":0",
                host="127.0.0.1",
                silence_logs=50,
            ) as cluster,
            Client(cluster) as client,
        ):
            client.wait_for_workers(1)
            warm = [
                client.submit(
                    _slot_task,
                    path,
                    config,
                    device,
                    tokens[:1],
                    styles[:1],
                    pure=False,
                    resources={"GPU": 1},
                )
                for _ in range(n)
            ]
            client.gather(warm)
            with GpuSampler() as sampler:
                t0 = time.perf_counter()
                futures = [client.submit(_slot_task, path, config, device, t, s, pure=False,
                                         resources={"GPU": 1}) for t, s in tasks]  # fmt: skip
                results = client.gather(futures)
                wall = time.perf_counter() - t0
            info = next(iter(client.scheduler_info()["workers"].values()))
        audio_s = sum(r[0] for r in results)
        spans = sorted((r[1], 1) for r in results) + sorted((r[2], -1) for r in results)
        now = most = 0
        for _, step in sorted(spans):
            now += step
            most = max(most, now)
        rows.append(
            {
                "slots": n,
                "tasks": len(tasks),
                "texts": len(texts),
                "chars": sum(len(t) for t in texts),
                "wall_s": round(wall, 3),
                "audio_s": round(audio_s, 1),
                "audio_x": round(audio_s / wall, 1),
                "chars_per_s": round(sum(len(t) for t in texts) / wall, 1),
                "most_tasks_at_once": most,
                "worker_threads": info["nthreads"],
                "worker_resources": info["resources"],
                "model_loads": sorted({r[4] for r in results}),
                "gpu_util": sampler.summary(),
            }
        )
    return rows


def coqui_section(device: str, quick: bool, n_texts: int) -> dict:
    """bench_coqui.py's batching figure, on *device*, with this script's texts."""
    import importlib

    try:
        importlib.import_module("TTS")
    except Exception as exc:  # noqa: BLE001 - coqui-tts or any part of its stack missing or broken
        return {"skipped": f"coqui-tts not importable here: {type(exc).__name__}: {exc}"[:300]}
    import bench_coqui

    with tempfile.TemporaryDirectory(prefix="e2a-gpu-vits-") as tmp:
        if quick:
            from coqui_models import build_tiny_vits

            model = str(build_tiny_vits(Path(tmp) / "vits"))
        else:
            model = str(bench_coqui.build_vits(Path(tmp) / "vits"))
        items = [(hashlib.sha256(t.encode()).hexdigest(), t[:250]) for t in chunks(n_texts, seed=2)]
        result = bench_coqui.batching(model, items, 16, device, os.cpu_count() or 1)
    result["xtts"] = "one text at a time (autoregressive GPT): no batching to measure"
    return result


def _visible() -> dict:
    import os as _os

    import torch

    out = {"CUDA_VISIBLE_DEVICES": _os.environ.get("CUDA_VISIBLE_DEVICES"), "torch_devices": 0}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out.update(
            torch_devices=torch.cuda.device_count(),
            name=props.name,
            uuid=str(getattr(props, "uuid", "")),
        )
    return out


def _where() -> tuple:
    from distributed import get_worker

    return get_worker().address, _visible()


def _smi_uuids() -> dict[str, str]:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return {}
    out = subprocess.run(
        [smi, "--query-gpu=index,uuid", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return {
        i.strip(): u.strip()
        for i, u in (line.split(",", 1) for line in out.splitlines() if "," in line)
    }


def placement_section(gpus: list[str]) -> dict:
    """One worker per GPU, each seeing only its own; GPU tasks go only to them."""
    from distributed import Client

    from ebook2audio_dask.cluster import GPULocalCluster

    with GPULocalCluster(gpus, slots_per_gpu=2, threads_per_worker=1, resources={"GPU": 1},
                         dashboard_address=":0", host="127.0.0.1", silence_logs=50) as cluster, \
            Client(cluster) as client:  # fmt: skip
        client.wait_for_workers(len(gpus))
        seen = client.run(_visible)
        tasks = client.gather(
            [client.submit(_where, pure=False, resources={"GPU": 1}) for _ in range(4 * len(gpus))]
        )
    uuids = _smi_uuids()
    workers = []
    for address, v in sorted(seen.items()):
        gpu = v["CUDA_VISIBLE_DEVICES"]
        ok = v["torch_devices"] == 1 and (
            not uuids or uuids.get(gpu, "").endswith(v.get("uuid", "")[-12:])
        )
        workers.append({"worker": address, **v, "sees_only_its_gpu": ok})
    return {
        "gpus": gpus,
        "workers": workers,
        "distinct_gpus": len({w["CUDA_VISIBLE_DEVICES"] for w in workers}) == len(gpus),
        "tasks_per_worker": {a: sum(1 for w, _ in tasks if w == a) for a in seen},
        "tasks_saw_their_workers_gpu": all(
            seen[w]["CUDA_VISIBLE_DEVICES"] == v["CUDA_VISIBLE_DEVICES"] for w, v in tasks
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="CPU, tiny models, seconds (smoke test)"
    )
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument(
        "--budget-s", type=float, default=420.0, help="skip sections that would start later"
    )
    parser.add_argument(
        "--wheels", action="store_true", help="print the wheels to carry, one per line"
    )
    args = parser.parse_args(argv)
    if args.wheels:
        print("\n".join(WHEELS))
        return 0
    started = time.time()
    deadline = started + args.budget_s
    import torch
    from kokoro_models import build_kokoro

    from ebook2audio_dask.cluster import detect_gpus

    device = "cuda" if torch.cuda.is_available() and not args.quick else "cpu"
    result: dict = {
        "mode": "quick" if args.quick else "full",
        "device": device,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": _machine(device),
    }
    if device == "cpu" and not args.quick:
        result.update(measured=False, why="no CUDA GPU visible to torch")
        _emit(result, args.out)
        return 0
    result["measured"] = True
    size = "tiny" if args.quick else "full"
    n_texts = 4 if args.quick else 256
    longest = 60 if args.quick else 300
    with tempfile.TemporaryDirectory(prefix="e2a-gpu-check-") as tmp:
        t0 = time.perf_counter()
        # ~3 frames (75 ms) per phoneme as real speech; 1 with --quick, to keep it short
        path, config = build_kokoro(
            Path(tmp) / "kokoro", size, seed=0, frames_per_token=1.0 if args.quick else 3.0
        )
        state = torch.load(path, weights_only=True)
        params = sum(v.numel() for part in state.values() for v in part.values())
        result["kokoro_model"] = {"size": size, "params_m": round(params / 1e6, 1),
                                  "build_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
        model = (str(path), config)
        result["kokoro"] = kokoro_section(model, device, n_texts, longest)
        gpus = detect_gpus() if device == "cuda" else ["0", "1"]  # without GPUs: names only
        slots = (1, 2) if args.quick else SLOTS
        result["slots"] = slots_section(
            model,
            device,
            gpus[0],
            2 if args.quick else 240,
            longest,
            slots,
            deadline,
            per_task=1 if args.quick else 15,
        )
    result["coqui"] = (
        coqui_section(device, args.quick, 4 if args.quick else 48)
        if time.time() < deadline
        else {"skipped": "time budget"}
    )
    result["placement"] = (placement_section(gpus) if time.time() < deadline + 60
                           else {"skipped": "time budget"})  # fmt: skip
    result["wall_s"] = round(time.time() - started, 1)
    _emit(result, args.out)
    return 0


def _emit(result: dict, out: str | None) -> None:
    text = json.dumps(result)
    if out:
        Path(out).write_text(text + "\n", encoding="utf-8")
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
