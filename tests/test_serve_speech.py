"""Text spoken across the cluster: serve.speech's speak/encode/preview on a real embedded
cluster, and ``POST /v1/audio/speech`` answered to the official ``openai`` client by a real
``ebook2audio serve`` process (ASR round trip of what it says)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from distributed import get_task_stream

from ebook2audio_dask import config, read_book
from ebook2audio_dask.audio import decode_to_pcm, decode_wav
from ebook2audio_dask.engines import engine_info, engine_names
from ebook2audio_dask.errors import UsageError
from ebook2audio_dask.serve import ServeSettings
from ebook2audio_dask.serve.speech import (
    PCM_RATE,
    RESPONSE_FORMATS,
    encode,
    engine_voice,
    preview,
    preview_text,
    speak,
    speed_settings,
)

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "examples" / "childrens-literature.epub"

PARAGRAPHS = [
    "The old lighthouse keeper climbed the stairs every evening at dusk.",
    "He carried a small lamp, a flask of tea, and a notebook full of weather.",
    "One night the fog rolled in so thickly that the beam seemed to stop at the glass.",
    "Far below, a fishing boat was feeling its way along the rocks toward the harbour.",
    "The keeper rang the great bell, slowly, again and again, until his arms ached.",
    "At dawn the boat lay safe at the quay, and the fishermen came up the hill to thank him.",
]


def synthesize_tasks(stream) -> list[dict]:
    return [t for t in stream.data if str(t["key"]).startswith("('synthesize-") or
            str(t["key"]).startswith("synthesize-")]  # fmt: skip


# --------------------------------------------------------------------------- units
def test_speed_settings_map_to_each_engine():
    assert speed_settings("piper", 2.0) == ({"length_scale": 0.5}, 1.0)
    assert speed_settings("kokoro", 1.5) == ({"speed": 1.5}, 1.0)
    assert speed_settings("espeak", 2.0) == ({"rate": 350}, 1.0)
    assert speed_settings("openai", 0.25) == ({"speed": 0.25}, 1.0)
    # beyond the engine's range: the rest by ffmpeg's atempo
    settings, tempo = speed_settings("kokoro", 4.0)
    assert settings == {"speed": 2.0} and tempo == pytest.approx(2.0)
    settings, tempo = speed_settings("espeak", 0.25)
    assert settings == {"rate": 80} and tempo == pytest.approx(0.25 * 175 / 80)
    assert speed_settings("fake", 1.5) == ({}, 1.5)
    assert speed_settings("piper", 1.0) == ({}, 1.0)
    with pytest.raises(UsageError):
        speed_settings("piper", 0)


def test_engine_voice_maps_openai_names_and_refuses_others():
    assert engine_voice("piper", "alloy") is None  # OpenAI name: the engine's default voice
    assert engine_voice("piper", None) is None
    assert engine_voice("piper", "en_US-joe-medium") == "en_US-joe-medium"
    assert engine_voice("openai", "alloy") == "alloy"  # the engine's own voice of that name
    with pytest.raises(UsageError, match="has no voice"):
        engine_voice("piper", "/etc/passwd")  # never a file the client names
    with pytest.raises(UsageError, match="has no voice"):
        engine_voice("espeak", "no-such-voice")


def test_preview_text_is_whole_sentences_of_the_first_chapter():
    book = read_book(str(BOOK))
    text = preview_text(book, 200)
    assert 0 < len(text) <= 200
    assert text.startswith("The rabbis of old were good story-tellers.")  # not the "190" heading
    assert text.endswith((".", "!", "?", '"')) and text in " ".join(
        " ".join(book.chapters[0].paragraphs[1].split()).split()
    )


# --------------------------------------------------------------------------- on a cluster
def test_speak_joins_chunks_in_order_with_pauses_and_shares_the_work(client, cache_dir):
    """The whole text's audio is each paragraph's audio in order, with the paragraph pause
    between them; its chunks are synthesised by several tasks on both workers."""
    text = "\n\n".join(PARAGRAPHS)
    with get_task_stream(client) as stream:
        whole, rate = speak(client, text, engine="espeak", cache=cache_dir)
    tasks = synthesize_tasks(stream)
    assert len(tasks) >= 2, [t["key"] for t in stream.data]
    assert len({t["worker"] for t in tasks}) == 2, "both workers should synthesise"
    assert rate == 22050 and whole.dtype == np.int16
    pause = int(round(float(config.get("pauses.paragraph")) * rate))
    parts = []
    for i, para in enumerate(PARAGRAPHS):
        pcm, _ = speak(client, para, engine="espeak", cache=cache_dir)
        assert np.abs(pcm.astype(np.int32)).max() > 1000  # speech, not silence
        parts.append(pcm)
        if i < len(PARAGRAPHS) - 1:
            parts.append(np.zeros(pause, np.int16))
    expected = np.concatenate(parts)
    assert len(whole) == len(expected)
    assert np.array_equal(whole, expected)


def test_speech_fails_when_no_worker_offers_the_resources(client, cache_dir):
    """A request never waits forever on tasks no worker can run (a book fails the same way)."""
    import dask

    from ebook2audio_dask.serve.speech import NoWorkers

    with dask.config.set({"ebook2audio.synthesize.resources": {"TPU": 1},
                          "ebook2audio.cluster.no-workers-timeout": 1}):  # fmt: skip
        with pytest.raises(NoWorkers, match=r"\(TPU=1\) after 1 s"):
            speak(client, "Nobody can say this.", engine="fake", cache=cache_dir)
    # the workers offer GPU=1: speech runs there as before
    pcm, _ = speak(client, "Somebody can say this.", engine="fake", cache=cache_dir)
    assert len(pcm) > 0


def test_second_identical_request_synthesises_nothing(client, cache_dir):
    text = "Caching is checked here. " * 30
    first, rate = speak(client, text, engine="espeak", cache=cache_dir)
    with get_task_stream(client) as stream:
        again, rate2 = speak(client, text, engine="espeak", cache=cache_dir)
    assert synthesize_tasks(stream) == []
    assert rate2 == rate and np.array_equal(first, again)
    # another speed is other audio: other chunks (the setting is in the content keys)
    with get_task_stream(client) as stream:
        fast, _ = speak(client, text, engine="espeak", cache=cache_dir, speed=2.0)
    assert synthesize_tasks(stream)
    assert 0.35 * len(first) < len(fast) < 0.75 * len(first)


def test_speed_without_an_engine_setting_uses_atempo(client, cache_dir):
    """The fake engine says one second of tone per chunk and has no speed setting."""
    normal, rate = speak(client, "Just one chunk.", engine="fake", cache=cache_dir)
    fast, _ = speak(client, "Just one chunk.", engine="fake", cache=cache_dir, speed=2.0)
    slow, _ = speak(client, "Just one chunk.", engine="fake", cache=cache_dir, speed=0.25)
    assert len(normal) == rate
    assert len(fast) == pytest.approx(rate / 2, rel=0.04)  # atempo's ends cost a few ms
    assert len(slow) == pytest.approx(rate * 4, rel=0.04)


@pytest.mark.parametrize("fmt", sorted(RESPONSE_FORMATS))
def test_every_response_format_decodes_to_the_right_duration(client, cache_dir, tmp_path, fmt):
    pcm, rate = speak(client, "\n\n".join(PARAGRAPHS[:2]), engine="espeak", cache=cache_dir)
    seconds = len(pcm) / rate
    data, media = encode(pcm, rate, fmt)
    assert media == RESPONSE_FORMATS[fmt][0]
    if fmt == "pcm":
        assert len(data) % 2 == 0
        assert abs(len(data) / 2 / PCM_RATE - seconds) < 0.01
        return
    path = tmp_path / f"speech.{fmt}"
    path.write_bytes(data)
    decoded = decode_to_pcm(path, 16000)
    assert abs(len(decoded) / 16000 - seconds) < 0.1, (fmt, len(decoded) / 16000, seconds)
    assert np.abs(decoded.astype(np.int32)).max() > 1000
    if fmt == "wav":  # at OpenAI's 24 kHz, resampled
        samples, wav_rate = decode_wav(data)
        assert wav_rate == PCM_RATE and abs(len(samples) / PCM_RATE - seconds) < 0.01


def test_encode_refuses_an_unknown_format():
    with pytest.raises(UsageError, match="response_format"):
        encode(np.zeros(100, np.int16), 8000, "ogg-vorbis")


def test_preview_speaks_the_start_of_a_book(client, tmp_path):
    settings = ServeSettings.from_config(data=tmp_path / "data")
    book = read_book(str(BOOK))
    wav = preview(client, book, "espeak", None, settings)
    samples, rate = decode_wav(wav)
    assert rate == PCM_RATE and 2 < len(samples) / rate < 30
    # an upload record (as JobStore.get_upload returns it) is read from its path
    upload = {"id": "u1", "name": BOOK.name, "path": str(BOOK), "error": None}
    assert preview(client, upload, "espeak", None, settings) == wav
    # a text, cut at the preview length
    wav = preview(client, "A short text to hear the voice.", "espeak", None, settings)
    assert decode_wav(wav)[0].size > 0
    with pytest.raises(UsageError):
        preview(client, {"name": "x.epub", "path": None, "error": "not an ebook"}, None, None,
                settings)  # fmt: skip


# --------------------------------------------------------------------------- a real server
# A few sentences of several piper chunks (piper takes at most 400 characters a chunk).
STORY = " ".join(PARAGRAPHS[:5])
TOKEN = "speech-test-token-7f3a"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real ``ebook2audio serve`` (token mode, 2 workers), stopped by the fixture."""
    from serve_helpers import ServerProcess

    data = tmp_path_factory.mktemp("speech-server") / "data"
    proc = ServerProcess(
        data,
        "--n-workers",
        "2",
        token=TOKEN,
        # the faulty test engine (espeak) raises on chunks holding this word
        env={"DASK_EBOOK2AUDIO__SERVE__SPEECH_MAX_CHARS": "3000", "E2A_FAULTY_FAIL": "unsayable"},
    )
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def openai_client(server):
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key=TOKEN, max_retries=0, timeout=300)


def chunk_files(server) -> set[str]:
    return {str(p) for p in (server.data / "chunks").rglob("*.wav")}


@pytest.mark.slow
def test_openai_client_gets_the_words_spoken_in_order(server, openai_client):
    """The official client's request, answered by piper across the cluster: a long input
    (several chunks) comes back in order (ASR: few errors, no long missing run)."""
    from asr import round_trip

    response = openai_client.audio.speech.create(
        model="piper", voice="alloy", input=STORY, response_format="wav"
    )
    samples, rate = decode_wav(response.content)
    assert rate == PCM_RATE  # OpenAI's rate, whatever the engine's
    assert len(samples) / rate > 15  # ~450 characters
    result = round_trip(STORY, samples, rate)
    assert result.wer <= 0.15 and result.longest_missing <= 3, result
    # the same request again: answered from the chunk store (no new chunk), same audio
    before = chunk_files(server)
    again = openai_client.audio.speech.create(
        model="piper", voice="alloy", input=STORY, response_format="wav"
    )
    assert chunk_files(server) == before
    assert again.content == response.content


@pytest.mark.slow
def test_openai_client_formats_and_default_model(server, openai_client, tmp_path):
    text = "Every format is decoded by ffmpeg."
    for fmt in ("mp3", "opus", "flac", "aac", "pcm"):
        response = openai_client.audio.speech.create(
            model="tts-1", voice="nova", input=text, response_format=fmt, speed=1.25
        )
        assert response.response.headers["content-type"].startswith(RESPONSE_FORMATS[fmt][0])
        if fmt == "pcm":
            audio_s = len(response.content) / 2 / PCM_RATE  # audio length, not wall time
        else:
            path = tmp_path / f"out.{fmt}"
            path.write_bytes(response.content)
            audio_s = len(decode_to_pcm(path, 16000)) / 16000
        assert 0.8 < audio_s < 6, (fmt, audio_s)  # the text's length as speech
    models = {m.id for m in openai_client.models.list()}
    assert {"tts-1", "tts-1-hd", "gpt-4o-mini-tts", "piper", "espeak"} <= models


@pytest.mark.slow
def test_this_projects_openai_engine_uses_the_server_as_its_backend(server):
    """``--engine openai --endpoint <server>/v1`` with its defaults (tts-1, WAV at 24 kHz)."""
    from asr import round_trip

    from ebook2audio_dask.engines.openai import OpenAIEngine, Secret

    runtime = {"endpoints": (server.url + "/v1/audio/speech",), "concurrency": 2,
               "timeout": 120.0, "retries": 2, "retry-seconds": 60.0,
               "api-key": Secret(TOKEN)}  # fmt: skip
    engine = OpenAIEngine("alloy", {"language": "en"}, model="tts-1", runtime=runtime)
    texts = PARAGRAPHS[:2]
    clips = engine.synthesize(texts)
    assert len(clips) == 2 and engine.sample_rate == PCM_RATE
    result = round_trip(" ".join(texts), np.concatenate(clips), PCM_RATE)
    assert result.wer <= 0.25 and result.longest_missing <= 3, result


@pytest.mark.slow
def test_errors_have_openais_shape(server, openai_client):
    import openai

    with pytest.raises(openai.NotFoundError) as info:
        openai_client.audio.speech.create(model="no-such-model", voice="alloy", input="Hi.")
    assert info.value.body["code"] == "model_not_found" and info.value.body["param"] == "model"
    # an engine that cannot speak here (kokoro and coqui without a configured model)
    idle = [n for n in engine_names() if not (engine_info(n)["available"] and
                                              not engine_info(n)["why"])]  # fmt: skip
    assert idle, "expected kokoro/coqui without a model in the test environment"
    with pytest.raises(openai.NotFoundError) as info:
        openai_client.audio.speech.create(model=idle[0], voice="alloy", input="Hi.")
    assert "not available" in info.value.body["message"]
    assert idle[0] not in {m.id for m in openai_client.models.list()}
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.audio.speech.create(model="piper", voice="../../etc/passwd", input="Hi.")
    assert "no voice" in info.value.body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.audio.speech.create(model="piper", voice="alloy", input="Hi.", speed=9)
    assert info.value.body["param"] == "speed"
    with pytest.raises(openai.APIStatusError) as info:
        openai_client.audio.speech.create(model="piper", voice="alloy", input="word " * 700)
    assert info.value.status_code == 413 and info.value.body["param"] == "input"
    # the engine failing on a chunk (every retry spent): a server error, in the same shape
    with pytest.raises(openai.InternalServerError) as info:
        openai_client.audio.speech.create(
            model="faulty", voice="alloy", input="Fine words. Then an unsayable one."
        )
    assert info.value.body["type"] == "server_error"
    assert "engine failed on a chunk" in info.value.body["message"]
    with server.client() as http:
        r = http.post("/v1/audio/speech", content=b"not json",
                      headers={"Content-Type": "application/json"})  # fmt: skip
        assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param",
                                                                   "code"}  # fmt: skip
        # no token: refused before anything is spoken
        r = http.post("/v1/audio/speech", headers={"Authorization": "Bearer wrong"},
                      json={"model": "piper", "voice": "alloy", "input": "Hi."})  # fmt: skip
        assert r.status_code == 401


@pytest.mark.slow
def test_no_cluster_yet_is_503(tmp_path):
    """A server whose scheduler is not there (yet) answers 503 in OpenAI's shape."""
    from serve_helpers import ServerProcess, free_port

    proc = ServerProcess(
        tmp_path / "data",
        "--scheduler",
        f"tcp://127.0.0.1:{free_port()}",
        env={"DASK_EBOOK2AUDIO__CLUSTER__CONNECT_TIMEOUT": "3"},  # each (re)connect tries 3 s
    )
    try:
        proc.start()
        with proc.client() as http:
            r = http.post("/v1/audio/speech", headers={"Authorization": "Bearer x"},
                          json={"model": "tts-1", "voice": "alloy", "input": "Hello."})  # fmt: skip
        assert r.status_code == 503, r.text
        assert r.json()["error"]["type"] == "server_error"
    finally:
        proc.stop()
