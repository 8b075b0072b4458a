"""Coqui VITS: batched vs one-sentence-at-a-time, and model loads per worker.

Builds a VITS model of the standard size (coqui-tts's default ``VitsArgs``,
the architecture of ``tts_models/en/ljspeech/vits``) with random weights —
the machine cannot download pretrained ones; compute cost does not depend on
the weights' values — then:

1. **batching**: the same chunks (real book text, cut by the pipeline's own
   planner) are spoken by the same engine instance (a) one chunk per call, as
   one-sentence-at-a-time tools do, and (b) sorted by length in batches of
   ``--batch-size`` (bucketed by length: ``length_buckets``), as the
   synthesize task does.  Figure: chars/s (b) over (a).
2. **loads**: the book is converted through the Dask graph on an embedded
   cluster of ``--workers`` processes; the report's ``engine_loads`` shows how
   many times each worker loaded the model.

Prints one JSON line.  Run on a GPU machine with ``--device cuda``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = (HERE.parent / ".." / "shared" / "corpus" / "childrens-literature.epub").resolve()


def build_vits(folder: Path) -> Path:
    """A standard-size VITS (random weights) saved the way Coqui saves models."""
    import torch
    from TTS.tts.configs.shared_configs import CharactersConfig
    from TTS.tts.configs.vits_config import VitsConfig
    from TTS.tts.models.vits import Vits, VitsArgs

    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    config = VitsConfig(
        model_args=VitsArgs(init_discriminator=False),
        use_phonemes=False,
        text_cleaner="english_cleaners",
        add_blank=True,
        characters=CharactersConfig(
            characters_class="TTS.tts.models.vits.VitsCharacters", pad="<PAD>", eos="<EOS>",
            bos="<BOS>", blank="<BLNK>", characters=letters, punctuations="!'(),-.:;? ",
        ),
    )  # fmt: skip
    torch.manual_seed(0)
    model = Vits(config)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict()}, folder / "model.pth")
    config.save_json(str(folder / "config.json"))
    return folder


def chunks_of(chapters: tuple[int, ...], model: str, limit: int) -> list[tuple[str, str]]:
    """``(key, text)`` of the book's chunks as the pipeline plans them for this model."""
    from ebook2audio_dask.pipeline.tasks import PlanRequest, parse_task, plan_task

    book = parse_task(str(CORPUS), False, None)
    plan = plan_task(book, PlanRequest(chapters=chapters, engine="coqui", model=model))
    seen, out = set(), []
    for c in plan.chunks:
        if c.key not in seen:
            seen.add(c.key)
            out.append((c.key, c.text))
    return out[:limit]


def batching(model: str, items, batch_size: int, device: str, threads: int) -> dict:
    import torch

    from ebook2audio_dask.engines.coqui import CoquiEngine
    from ebook2audio_dask.pipeline.tasks import length_buckets, seed_for

    t0 = time.perf_counter()
    engine = CoquiEngine("default", {"language": "en"}, threads=threads, model=model, device=device)
    load_s = time.perf_counter() - t0
    texts = [t for _, t in items]
    seeds = [seed_for(k) for k, _ in items]
    chars = sum(len(t) for t in texts)
    engine.synthesize(texts[:2], seeds=seeds[:2])  # warm-up (kernels, allocator)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    engine.batch_size = 1
    sync()
    t0 = time.perf_counter()
    single = [engine.synthesize([t], seeds=[s])[0] for t, s in zip(texts, seeds)]
    sync()
    single_s = time.perf_counter() - t0

    engine.batch_size = batch_size
    groups = length_buckets(tuple(items), batch_size)  # as synthesize_task groups them
    sync()
    t0 = time.perf_counter()
    batched = []
    for group in groups:
        batched += engine.synthesize([t for _, t in group], seeds=[seed_for(k) for k, _ in group])
    sync()
    batched_s = time.perf_counter() - t0
    rate = engine.sample_rate
    return {
        "device": engine.device,
        "precision": engine.precision,
        "torch_threads": torch.get_num_threads(),
        "load_s": round(load_s, 2),
        "chunks": len(texts),
        "chars": chars,
        "batch_size": batch_size,
        "batches": len(groups),
        "mean_batch": round(len(texts) / len(groups), 1),
        "single_s": round(single_s, 2),
        "batched_s": round(batched_s, 2),
        "single_chars_per_s": round(chars / single_s, 1),
        "batched_chars_per_s": round(chars / batched_s, 1),
        "ratio": round(single_s / batched_s, 3),
        "audio_s_single": round(sum(len(a) for a in single) / rate, 1),
        "audio_s_batched": round(sum(len(a) for a in batched) / rate, 1),
    }


def loads(model: str, chapters: tuple[int, ...], workers: int) -> dict:
    import ebook2audio_dask as e2a

    with tempfile.TemporaryDirectory(prefix="e2a-bench-coqui-") as tmp:
        t0 = time.perf_counter()
        [r] = e2a.convert(
            str(CORPUS),
            tmp,
            engine="coqui",
            model=model,
            chapters=chapters,
            cache=os.path.join(tmp, "chunks"),
            n_workers=workers,
            gpus="none",
        )
        wall = time.perf_counter() - t0
    if not r.ok:
        raise SystemExit(f"convert failed: {r.error}")
    rep = r.report
    return {
        "workers": workers,
        "engine_loads": rep["engine_loads"],
        "loads_total": sum(rep["engine_loads"].values()),
        "chunks_per_worker": rep["chunks_per_worker"],
        "synthesize_tasks_chunks": rep["totals"]["chunks_synthesized"],
        "wall_s": round(wall, 1),
        "audio_s": rep["totals"]["audio_s"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-loads", action="store_true")
    args = parser.parse_args(argv)
    chapters = (2,)
    limit = 8 if args.quick else 48
    with tempfile.TemporaryDirectory(prefix="e2a-vits-") as tmp:
        t0 = time.perf_counter()
        model = str(build_vits(Path(tmp) / "vits"))
        build_s = time.perf_counter() - t0
        import torch

        params = sum(
            p.numel()
            for p in torch.load(Path(model) / "model.pth", weights_only=True)["model"].values()
        )
        items = chunks_of(chapters, model, limit)
        out = {"model_params_m": round(params / 1e6, 1), "build_s": round(build_s, 1)}
        out["batching"] = batching(model, items, args.batch_size, args.device, args.threads)
        if not args.skip_loads:
            out["loads"] = loads(model, (2,) if not args.quick else (1,), args.workers)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
