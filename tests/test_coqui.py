"""The Coqui engine, for real, on models the tests build with coqui-tts's own classes.

CI has no GPU and cannot download weights: :mod:`coqui_models` builds small
randomly initialised VITS models (single- and multi-speaker) in the same
format as a download (``model.pth`` + ``config.json``), and everything below
loads them through Coqui's public loading API and speaks through the engine
and the Dask graph.  Random weights speak noise, but lengths, sample rates,
batching, seeds, speakers and file handling are all real.
"""

from __future__ import annotations

import json
import os
import shutil
import wave
from pathlib import Path

import dask
import numpy as np
import pytest

pytest.importorskip("TTS", reason="coqui-tts is part of the dev install (.ci/run installs it)")

from coqui_models import build_tiny_vits
from helpers import check_m4b_against_report, load_report, run_cli

import ebook2audio_dask as e2a
from ebook2audio_dask.engines import EngineSpec, resolve_spec
from ebook2audio_dask.engines.coqui import CoquiEngine, locate_model
from ebook2audio_dask.errors import EngineError, UsageError

SENTENCES = [
    "It was the best of times, it was the worst of times.",
    "Call me Ishmael.",
    "In a hole in the ground there lived a hobbit, not a nasty dirty wet hole.",
]


@pytest.fixture(scope="session")
def vits(tmp_path_factory) -> Path:
    """A single-speaker tiny VITS model folder."""
    return build_tiny_vits(tmp_path_factory.mktemp("vits"))


@pytest.fixture(scope="session")
def vits_ms(tmp_path_factory) -> Path:
    """A two-speaker tiny VITS model folder (speakers by name)."""
    return build_tiny_vits(tmp_path_factory.mktemp("vits-ms"), speakers=("alice", "bob"), seed=1)


@pytest.fixture(scope="session")
def engine(vits) -> CoquiEngine:
    """The tiny VITS with batches of 8 (``auto`` would be 1 on this CPU)."""
    with dask.config.set({"ebook2audio.coqui.batch-size": 8}):
        return CoquiEngine("default", {"language": "en"}, model=str(vits))


def _rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))


# --------------------------------------------------------------------------- engine
def test_loads_through_coqui_and_describes_the_model(vits, engine):
    assert engine.kind == "vits" and engine.device == "cpu" and engine.precision == "fp32"
    assert engine.sample_rate == 22050 == CoquiEngine.sample_rate_for("default", str(vits))
    assert engine.batch_size == 8  # VITS batches (as configured)
    assert CoquiEngine("default", model=str(vits)).batch_size == 1  # auto on CPU
    assert [v.id for v in CoquiEngine.voices(str(vits))] == ["default"]
    assert CoquiEngine.accepts_voice_path(
        "ref/narrator.wav"
    ) and not CoquiEngine.accepts_voice_path("alice")
    files = locate_model(str(vits))
    assert files.checkpoint == vits / "model.pth" and files.config == vits / "config.json"
    assert locate_model(str(vits / "model.pth")).checkpoint == vits / "model.pth"


def test_audio_is_speech_shaped_and_proportional_to_text(engine):
    short, long_ = "Hello there.", "Hello there. " * 8
    a_short, a_long = engine.synthesize([short, long_], seeds=[1, 1])
    assert a_short.dtype == np.int16 and a_short.ndim == 1
    assert _rms(a_short) > 100 and _rms(a_long) > 100  # not silence
    ratio = len(a_long) / len(a_short)
    assert 4 < ratio < 12, ratio  # 8x the text, roughly 8x the audio
    assert [len(x) for x in engine.synthesize(["", "  ", "Hi."])][:2] == [0, 0]


def test_same_seed_same_audio_other_seed_other_audio(engine):
    first = engine.synthesize(SENTENCES, seeds=[11, 12, 13])
    again = engine.synthesize(SENTENCES, seeds=[11, 12, 13])
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    other = engine.synthesize(SENTENCES[:1], seeds=[99])[0]
    assert not (len(other) == len(first[0]) and np.array_equal(other, first[0]))


def test_a_chunk_sounds_the_same_alone_or_in_any_batch(engine):
    batched = engine.synthesize(SENTENCES, seeds=[5, 6, 7])
    for text, seed, in_batch in zip(SENTENCES, [5, 6, 7], batched):
        alone = engine.synthesize([text], seeds=[seed])[0]
        assert len(alone) == len(in_batch)  # durations come from the row's own noise
        corr = np.corrcoef(alone.astype(float), in_batch.astype(float))[0, 1]
        assert corr > 0.99, corr  # equal up to float rounding around the padding


def test_settings_change_the_audio_and_unknown_ones_are_refused(vits, engine):
    slow = CoquiEngine("default", {"language": "en", "length_scale": 2.0}, model=str(vits))
    text, seed = SENTENCES[0], 3
    assert len(slow.synthesize([text], seeds=[seed])[0]) > 1.5 * len(
        engine.synthesize([text], seeds=[seed])[0]
    )
    with pytest.raises(EngineError, match="unknown coqui setting.*pitch"):
        CoquiEngine("default", {"pitch": 2}, model=str(vits))


def test_multi_speaker_model_speaks_by_speaker_name(vits_ms):
    assert sorted(v.id for v in CoquiEngine.voices(str(vits_ms))) == ["alice", "bob"]
    alice = CoquiEngine("alice", {"language": "en"}, model=str(vits_ms))
    bob = CoquiEngine("bob", {"language": "en"}, model=str(vits_ms))
    a, b = (
        alice.synthesize(SENTENCES[:1], seeds=[1])[0],
        bob.synthesize(SENTENCES[:1], seeds=[1])[0],
    )
    assert not (len(a) == len(b) and np.array_equal(a, b))
    with pytest.raises(EngineError, match="no speaker 'carol'.*alice, bob"):
        CoquiEngine("carol", model=str(vits_ms))


def test_model_errors_are_one_clear_line(tmp_path, vits):
    with pytest.raises(EngineError, match="coqui model not found: .*nowhere"):
        CoquiEngine("default", model=str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"model": "vits"}))
    with pytest.raises(EngineError, match="checkpoint not found in .*empty"):
        CoquiEngine("default", model=str(empty))
    bad = tmp_path / "bad"
    shutil.copytree(vits, bad)
    (bad / "model.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(EngineError, match="coqui model unreadable: .*bad"):
        CoquiEngine("default", model=str(bad))
    with pytest.raises(EngineError, match="not downloaded.*never downloads"):
        CoquiEngine("default", model="tts_models/en/ljspeech/vits")
    with (
        dask.config.set({"ebook2audio.coqui.model": None}),
        pytest.raises(EngineError, match="needs a model"),
    ):
        CoquiEngine("default")


def test_training_machine_paths_in_config_are_fixed(tmp_path, vits_ms):
    moved = tmp_path / "moved"
    shutil.copytree(vits_ms, moved)
    cfg = json.loads((moved / "config.json").read_text())
    cfg["speakers_file"] = cfg["model_args"]["speakers_file"] = (
        "/home/trainer/run-42/speaker_ids.json"
    )
    (moved / "config.json").write_text(json.dumps(cfg))
    engine = CoquiEngine("bob", {"language": "en"}, model=str(moved))
    assert len(engine.synthesize(["Hello."], seeds=[1])[0]) > 0


def test_model_from_an_fsspec_url_is_fetched_once(tmp_path, monkeypatch, vits):
    import fsspec

    monkeypatch.setenv("EBOOK2AUDIO_DASK_VOICE_CACHE", str(tmp_path / "cache"))
    mem = fsspec.filesystem("memory")
    for f in vits.iterdir():
        mem.pipe_file(f"/models/tiny/{f.name}", f.read_bytes())
    mem.pipe_file("/models/tiny/checkpoint_100.pth", b"an older checkpoint that must not be copied")
    url = "memory://models/tiny"
    assert CoquiEngine.sample_rate_for("default", url) == 22050
    engine = CoquiEngine("default", {"language": "en"}, model=url)
    copied = sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert copied == ["config.json", "model.pth"]
    assert len(engine.synthesize(["Hello."], seeds=[1])[0]) > 0
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    CoquiEngine("default", model=url)  # second load: nothing fetched again
    assert {
        p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*") if p.is_file()
    } == before
    mem.pipe_file("/models/tiny/model.pth", b"retrained, and broken")  # replaced remotely
    with pytest.raises(EngineError, match="coqui model unreadable: memory://models/tiny"):
        CoquiEngine("default", model=url)  # fetched again, not the stale copy


def test_routing_picks_a_configured_coqui_model_for_its_language(vits):
    with dask.config.set(
        {"ebook2audio.coqui.model": str(vits), "ebook2audio.coqui.language": "en"}
    ):
        routing = ("coqui", "piper", "espeak")
        spec, lang, warnings = resolve_spec("en-GB", routing=routing)
        assert (spec.engine, spec.voice, spec.model, lang) == (
            "coqui",
            "default",
            str(vits),
            "en-GB",
        )
        assert spec.settings_dict["language"] == "en-GB"
        spec, _, _ = resolve_spec("fr", routing=routing)  # the model does not speak French
        assert spec.engine == "espeak"
    spec, _, _ = resolve_spec("en", routing=("coqui", "piper", "espeak"))  # no model configured
    assert spec.engine == "piper"
    with pytest.raises(EngineError, match="needs a model"):
        resolve_spec("en", engine="coqui")
    with pytest.raises(UsageError, match="unknown voice 'carol'"):
        resolve_spec("en", engine="coqui", voice="carol", model=str(vits))


def test_identity_changes_when_the_model_does(tmp_path, vits):
    copy = tmp_path / "copy"
    shutil.copytree(vits, copy)
    spec = EngineSpec.make("coqui", "default", {"language": "en"}, str(copy))
    first = CoquiEngine.identify(spec)
    assert first.identity and CoquiEngine.identify(spec) == first
    with open(copy / "model.pth", "ab") as fh:  # retrained weights: new size and time
        fh.write(b"\0" * 16)
    assert CoquiEngine.identify(spec).identity != first.identity


# --------------------------------------------------------------------------- through Dask
@pytest.fixture(scope="module")
def cluster_config():
    """The module's ``client`` (conftest): two worker processes whose Coqui engines run padded
    batches of 4."""
    return {"ebook2audio.coqui.batch-size": 4}


def _batch_sizes():
    from ebook2audio_dask import engines

    return sorted(e.batch_size for e in engines._LOADED.values() if e.name == "coqui")


def _stored_chunks(cache: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((cache / "coqui").rglob("*.wav"))}


def test_coqui_through_the_dask_graph(client, corpus, tmp_path, vits_ms):
    cache = tmp_path / "chunks"
    out = tmp_path / "out"
    src = str(corpus / "childrens-literature.epub")
    [r] = e2a.convert(
        src,
        str(out),
        engine="coqui",
        model=str(vits_ms),
        voice="alice",
        chapters=[3],
        client=client,
        cache=str(cache),
        batch_chars=600,
    )
    assert r.ok, r.error
    report = load_report(out / "childrens-literature.report.json")
    assert (
        report["engine"] == "coqui"
        and report["voice"] == "alice"
        and report["model"] == str(vits_ms)
    )
    assert report["sample_rate"] == 22050
    check_m4b_against_report(out / "childrens-literature.m4b", report, expect_cover=True)
    # both workers synthesised, and each loaded the model exactly once
    assert len(report["chunks_per_worker"]) == 2
    assert report["engine_loads"] == {w: 1 for w in report["chunks_per_worker"]}
    sizes = client.run(_batch_sizes)
    assert all(s == [4] for s in sizes.values()), sizes  # batched on the workers
    # determinism: a fresh store and other batch sizes give the same chunk audio
    first = _stored_chunks(cache)
    assert len(first) == report["totals"]["unique_chunks"]
    cache2 = tmp_path / "chunks2"
    [r2] = e2a.convert(
        src,
        str(tmp_path / "out2"),
        engine="coqui",
        model=str(vits_ms),
        voice="alice",
        chapters=[3],
        client=client,
        cache=str(cache2),
        batch_chars=300,
    )
    assert r2.ok, r2.error
    second = _stored_chunks(cache2)
    assert second.keys() == first.keys()
    same = sum(first[k] == second[k] for k in first)
    close = 0
    for k in first:
        a = np.frombuffer(first[k][44:], "<i2").astype(float)
        b = np.frombuffer(second[k][44:], "<i2").astype(float)
        close += len(a) == len(b) and np.corrcoef(a, b)[0, 1] > 0.99
    assert close == len(first), (same, close, len(first))


def test_cli_converts_with_a_coqui_model_and_settings(corpus, tmp_path, vits_ms, cache_dir):
    proc = run_cli(
        "convert",
        str(corpus / "childrens-literature.epub"),
        "-o",
        str(tmp_path / "out"),
        "--chapters",
        "3",
        "--engine",
        "coqui",
        "--model",
        str(vits_ms),
        "--voice",
        "bob",
        "--setting",
        "noise_scale=0.5",
        "--workers",
        "1",
        "--cache",
        cache_dir,
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    report = load_report(tmp_path / "out" / "childrens-literature.report.json")
    assert report["engine_settings"] == {"language": "en", "noise_scale": 0.5}
    listing = run_cli("engines", "--json", "--model", str(vits_ms))
    [coqui] = [e for e in json.loads(listing.stdout) if e["name"] == "coqui"]
    assert coqui["available"] and coqui["model"] == str(vits_ms)
    assert [v["id"] for v in coqui["voices"]] == ["alice", "bob"] and coqui["sample_rate"] == 22050
    assert coqui["devices"] == ["cpu", "cuda"] and coqui["seeded"] is True
    bad = run_cli(
        "convert",
        str(corpus / "childrens-literature.epub"),
        "-o",
        str(tmp_path / "o2"),
        "--engine",
        "coqui",
        "--model",
        str(tmp_path / "missing"),
        "--workers",
        "1",
        "--no-progress",
    )
    assert bad.returncode == 1
    assert "coqui model config not found: " in bad.stderr and "Traceback" not in bad.stderr


# --------------------------------------------------------------------------- devices
def _visible_devices():
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def test_one_worker_per_gpu_each_sees_only_its_own():
    from distributed import Client

    from ebook2audio_dask.cluster import GPULocalCluster, parse_gpus

    assert parse_gpus("0,1") == ["0", "1"] and parse_gpus("none") == []
    with (
        GPULocalCluster(
            ["0", "1"],
            threads_per_worker=1,
            resources={"GPU": 1},
            dashboard_address=":0",
            host="127.0.0.1",
            silence_logs=50,
        ) as cluster,
        Client(cluster) as c,
    ):
        c.wait_for_workers(2)
        seen = c.run(_visible_devices)
        assert sorted(seen.values()) == ["0", "1"]
        assert all(w["resources"] == {"GPU": 1} for w in c.scheduler_info()["workers"].values())


def _loaded_engines():
    from ebook2audio_dask import engines

    return len(engines._LOADED)


def _load_tiny(model):
    from ebook2audio_dask.engines import EngineSpec, load_engine

    load_engine(EngineSpec.make("coqui", "default", {"language": "en"}, model))
    return _loaded_engines()


def test_worker_teardown_releases_loaded_models(client, vits):
    from ebook2audio_dask.cluster import EngineTeardown

    client.register_plugin(EngineTeardown())
    assert set(client.run(_load_tiny, str(vits)).values()) == {1}
    client.unregister_worker_plugin(EngineTeardown.name)  # runs the plugin's teardown
    assert set(client.run(_loaded_engines).values()) == {0}


def _write_wav(path: Path, seconds: float, rate: int = 22050) -> None:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 180 * t * (1 + t)) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def test_voice_clips_forms(tmp_path):
    from ebook2audio_dask.engines.coqui import _voice_clips

    for name in ("a.wav", "b.flac", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert _voice_clips(str(tmp_path / "a.wav")) == [str(tmp_path / "a.wav")]
    assert _voice_clips(f"{tmp_path}/a.wav|{tmp_path}/b.flac") == [
        str(tmp_path / "a.wav"),
        str(tmp_path / "b.flac"),
    ]
    assert _voice_clips(str(tmp_path)) == [str(tmp_path / "a.wav"), str(tmp_path / "b.flac")]
    assert _voice_clips(f"{tmp_path}/*.wav") == [str(tmp_path / "a.wav")]
    with pytest.raises(EngineError, match="no audio clips"):
        _voice_clips(f"{tmp_path}/*.mp3")


# --------------------------------------------------------------------------- XTTS v2
@pytest.fixture(scope="session")
def xtts(tmp_path_factory) -> Path:
    """A tiny random XTTS v2 folder (config.json, model.pth, vocab.json, speakers_xtts.pth)."""
    from tiny_xtts import build_tiny_xtts

    return build_tiny_xtts(tmp_path_factory.mktemp("xtts"))


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("clips")
    _write_wav(folder / "narrator-1.wav", 4.0)
    _write_wav(folder / "narrator-2.wav", 3.0, rate=16000)
    return folder / "narrator-1.wav", folder / "narrator-2.wav"


def test_xtts_describes_itself_from_its_folder(xtts):
    assert CoquiEngine.sample_rate_for("x.wav", str(xtts)) == 24000
    assert {"en", "fr", "ar", "nl"} <= set(CoquiEngine.languages(str(xtts)))
    assert [v.id for v in CoquiEngine.voices(str(xtts))] == ["Ana Florence", "Claribel Dervla"]
    assert CoquiEngine.voice_for_language("nl-BE", str(xtts)) == "Ana Florence"
    assert CoquiEngine.voice_for_language("tlh", str(xtts)) is None


def test_xtts_clones_once_and_reuses_the_conditioning_from_the_store(xtts, clips, tmp_path):
    from ebook2audio_dask.engines import coqui
    from ebook2audio_dask.storage import ChunkStore

    store = ChunkStore.make(str(tmp_path / "store"))
    voice = f"{clips[0]}|{clips[1]}"  # two reference clips (one at 16 kHz)
    before = coqui.CONDITIONING_COMPUTED
    first = CoquiEngine(voice, {"language": "en-US"}, model=str(xtts))
    assert first.kind == "xtts" and first.batch_size == 1 and first.sample_rate == 24000
    first.prepare(store)
    stored = list((tmp_path / "store" / "coqui" / "voices").glob("*.npz"))
    assert len(stored) == 1 and before + 1 == coqui.CONDITIONING_COMPUTED
    audio = first.synthesize(SENTENCES, seeds=[1, 2, 3])
    assert all(len(a) > 0 for a in audio) and _rms(audio[0]) > 300
    assert np.array_equal(first.synthesize(SENTENCES[:1], seeds=[1])[0], audio[0])  # seeded
    # another engine (another worker) reads the stored conditioning: same audio, nothing recomputed
    second = CoquiEngine(voice, {"language": "en-US"}, model=str(xtts))
    second.prepare(store)
    assert before + 1 == coqui.CONDITIONING_COMPUTED
    assert np.array_equal(second.synthesize(SENTENCES[:1], seeds=[1])[0], audio[0])
    # one clip only: another voice, another stored conditioning
    CoquiEngine(str(clips[0]), {"language": "en"}, model=str(xtts)).prepare(store)
    assert len(list((tmp_path / "store" / "coqui" / "voices").glob("*.npz"))) == 2


def test_xtts_builtin_speaker_and_bad_voices(xtts, tmp_path):
    ana = CoquiEngine("Ana Florence", {"language": "fr"}, model=str(xtts))
    assert len(ana.synthesize(["Bonjour tout le monde."], seeds=[4])[0]) > 0
    with pytest.raises(EngineError, match="XTTS needs reference audio"):
        CoquiEngine("Nobody", model=str(xtts))
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("this is not audio")
    broken = CoquiEngine(str(not_audio), {"language": "en"}, model=str(xtts))
    with pytest.raises(EngineError, match="voice clip unreadable: .*notes.wav"):
        broken.prepare(None)


def _conditionings():
    from ebook2audio_dask.engines import coqui

    return coqui.CONDITIONING_COMPUTED


def test_xtts_voice_cloning_through_the_graph_computes_the_voice_once(
    client, xtts, clips, tmp_path
):
    book = tmp_path / "short.html"
    book.write_text(
        "<html lang='en'><head><title>Clone</title></head><body><h1>One</h1><p>"
        + "A cloned voice reads this sentence. " * 20
        + "</p><h1>Two</h1><p>"
        + "And this one too, in the same voice. " * 20
        + "</p></body></html>"
    )
    before = sum(client.run(_conditionings).values())
    [r] = e2a.convert(
        str(book),
        str(tmp_path / "out"),
        engine="coqui",
        model=str(xtts),
        voice=str(clips[0]),
        client=client,
        cache=str(tmp_path / "chunks"),
        batch_chars=120,
    )
    assert r.ok, r.error
    assert r.report["sample_rate"] == 24000 and r.report["voice"] == str(clips[0])
    assert len(r.report["chunks_per_worker"]) == 2  # both workers spoke...
    assert sum(client.run(_conditionings).values()) == before + 1  # ...one computed the voice
    check_m4b_against_report(tmp_path / "out" / "short.m4b", r.report, expect_cover=False)
