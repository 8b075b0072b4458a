"""The ``openai`` engine against a real OpenAI-compatible speech server process.

The server (``tests/openai_server.py``) runs as its own process on 127.0.0.1,
speaks with espeak-ng, wants a Bearer key, and fails on demand (429 with
Retry-After, 5xx, slow answers, cut bodies, wrong sample rate): its request
log counts what the engine sent.
"""

from __future__ import annotations

import json
import pickle
import socket
from pathlib import Path

import dask
import numpy as np
import pytest
from helpers import check_m4b_against_report, load_report, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from openai_server import SpeechServer

import ebook2audio_dask as e2a
from ebook2audio_dask.audio.wav import encode_wav
from ebook2audio_dask.engines import EngineSpec, resolve_spec, with_runtime
from ebook2audio_dask.engines.openai import OpenAIEngine, Secret, _wav_samples
from ebook2audio_dask.errors import EngineError

KEY = "sk-test-Zq8vN3xKEYs3cr3t"

TEXTS = [
    "It was the best of times, it was the worst of times.",
    "The rain fell on the quiet town all night long.",
    "In the morning the baker opened his shop.",
    "The smell of fresh bread filled the narrow street.",
    "The children ran down to the river to watch the boats.",
    "A small dog followed them, barking at the ducks.",
    "By noon the sun was out over the hills.",
    "Everyone agreed it had been a fine day after all.",
]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Two speech servers wanting :data:`KEY`."""
    work = tmp_path_factory.mktemp("servers")
    with SpeechServer(work, key=KEY) as a, SpeechServer(work, key=KEY) as b:
        yield a, b


@pytest.fixture
def server(servers):
    """The first server, with no faults queued and an empty log."""
    for s in servers:
        s.control(faults=[], always=None, clear_log=True)
    return servers[0]


def _runtime(*urls: str, key: str | None = KEY, **over) -> dict:
    runtime = {
        "endpoints": tuple(u + "/audio/speech" for u in urls),
        "concurrency": 4,
        "timeout": 20.0,
        "retries": 6,
        "retry-seconds": 120.0,
    }
    if key is not None:
        runtime["api-key"] = Secret(key)
    runtime.update(over)
    return runtime


def _engine(*urls: str, voice: str = "alloy", settings: dict | None = None, **over) -> OpenAIEngine:
    settings = {"language": "en", **(settings or {})}
    return OpenAIEngine(voice, settings, model="tts-1", runtime=_runtime(*urls, **over))


def _speech(log: list[dict]) -> list[dict]:
    return [e for e in log if "text" in e]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- the key
def test_secret_never_shows_and_runtime_stays_out_of_the_spec_identity():
    secret = Secret(KEY)
    for shown in (
        repr(secret),
        str(secret),
        f"{secret}",
        "%s" % secret,  # noqa: UP031 - %-formatting is one of the ways shown
        repr([secret]),
        repr({"k": secret}),
    ):
        assert KEY not in shown and "***" in shown
    assert pickle.loads(pickle.dumps(secret)) == secret and secret != Secret(KEY + "x")
    assert dask.base.tokenize(secret) == dask.base.tokenize(Secret("another key"))
    spec = EngineSpec.make("openai", "alloy", {"speed": 1.1}, "tts-1")
    a = EngineSpec(
        "openai",
        "alloy",
        spec.settings,
        "tts-1",
        runtime=(("endpoints", ("http://a:1/v1/audio/speech",)), ("api-key", secret)),
    )
    b = EngineSpec(
        "openai", "alloy", spec.settings, "tts-1", runtime=(("endpoints", ("http://b:2/x",)),)
    )
    assert a == b == spec and hash(a) == hash(spec) and a.token() == b.token() == spec.token()
    assert KEY not in repr(a) and "http://a" not in repr(a) and "http://a" not in a.token()
    back = pickle.loads(pickle.dumps(a))
    assert KEY not in repr(back) and back.runtime == a.runtime


def test_content_key_is_model_voice_and_settings_not_endpoint_or_key(monkeypatch):
    def planned(endpoint: str, key: str, **kw) -> EngineSpec:
        monkeypatch.setenv("OPENAI_API_KEY", key)
        with dask.config.set({"ebook2audio.openai.endpoints": [endpoint]}):
            spec, _, _ = resolve_spec(
                "en", engine="openai", **{"voice": "alloy", "model": "tts-1", **kw}
            )
            return with_runtime(OpenAIEngine.identify(spec))

    one = planned("http://127.0.0.1:1/v1", KEY)
    two = planned("https://speech.example:8880/v1", "sk-other")
    assert one.token() == two.token() and one == two
    assert dict(one.runtime)["endpoints"] != dict(two.runtime)["endpoints"]
    assert dict(one.runtime)["api-key"] == Secret(KEY)
    assert KEY not in one.token() and "127.0.0.1" not in one.token()
    for other in (
        planned("http://x/v1", KEY, voice="af_heart"),
        planned("http://x/v1", KEY, model="kokoro"),
        planned("http://x/v1", KEY, settings={"speed": 1.2}),
    ):
        assert other.token() != one.token()
    with dask.config.set({"ebook2audio.openai.sample-rate": 22050}):
        assert planned("http://x/v1", KEY).token() != one.token()  # the rate is in the key
    with dask.config.set({"ebook2audio.openai.send-key": False}):
        assert "api-key" not in dict(planned("http://x/v1", KEY).runtime)


# ---------------------------------------------------------------------------- speaking
def test_each_text_is_one_request_sent_concurrently(tmp_path):
    with SpeechServer(tmp_path, key=KEY, latency=0.3) as slow_server:
        engine = _engine(slow_server.url, settings={"speed": 1.0, "instructions": "calm"})
        audio = engine.synthesize(TEXTS + ["", "   "])
        log = _speech(slow_server.log())
    assert [a.dtype for a in audio] == [np.int16] * 10 and [len(a) for a in audio[8:]] == [0, 0]
    for text, pcm in zip(TEXTS, audio[:8]):
        seconds = len(pcm) / engine.sample_rate
        assert 0.04 < seconds / len(text) < 0.15  # speech-like pace at 24 kHz
        assert np.sqrt(np.mean(pcm.astype(float) ** 2)) > 300
    assert len(log) == 8 and {e["auth"] for e in log} == {"ok"}
    assert {e["voice"] for e in log} == {"alloy"} and {e["model"] for e in log} == {"tts-1"}
    # settings are sent; the book's language (a key part) is not
    assert log[0]["fields"] == [
        "input",
        "instructions",
        "model",
        "response_format",
        "speed",
        "voice",
    ]
    inflight = max(e["inflight"] for e in log)
    assert 2 <= inflight <= 4  # several at once, never more than the concurrency
    assert engine.batch_size == 16


def test_transient_faults_are_retried_and_retry_after_is_honoured(server):
    engine = _engine(server.url, timeout=2.0)
    clean = engine.synthesize(TEXTS)
    server.control(
        faults=["429:1.5", "500", "503", "slow:4", "truncate", "cut-wav", "empty"], clear_log=True
    )
    audio = engine.synthesize(TEXTS)
    log = _speech(server.log())
    assert all(len(a) > 0 for a in audio)
    for got, want in zip(audio, clean):
        assert abs(len(got) - len(want)) < 0.05 * len(want)
    # every fault was met once, and each cost exactly one more request
    assert sorted(e["fault"] for e in log if e["fault"]) == sorted(
        ["429:1.5", "500", "503", "slow:4", "truncate", "cut-wav", "empty"]
    )
    assert len(log) == len(TEXTS) + 7
    throttled = next(e for e in log if e["fault"] == "429:1.5")
    retry = next(e for e in log if e["text"] == throttled["text"] and e["t"] > throttled["t"])
    assert retry["t"] - throttled["t"] >= 1.5  # Retry-After honoured


def test_client_errors_fail_at_once_and_kept_audio_is_not_asked_again(server):
    engine = _engine(server.url)
    server.control(faults=["400"])
    with pytest.raises(EngineError) as info:
        engine.synthesize(TEXTS[:3])
    assert "HTTP 400" in str(info.value) and "injected bad request" in str(info.value)
    log = _speech(server.log())
    assert len(log) == 3  # no retry of a 400
    bad = next(e["text"] for e in log if e["status"] == 400)
    # the synthesize task then asks for the batch's texts one by one: only the failed one is sent
    # again
    for text in TEXTS[:3]:
        assert len(engine.synthesize([text])[0]) > 0
    log = _speech(server.log())
    assert len(log) == 4 and log[-1]["text"] == bad


def test_a_refused_key_is_named_but_never_echoed(server, monkeypatch):
    wrong = "sk-wrong-9fJ2LkQ"
    engine = _engine(server.url, key=wrong)
    with pytest.raises(EngineError) as info:
        engine.synthesize(TEXTS[:2])
    message = str(info.value)
    assert "the server refused the API key (HTTP 401)" in message
    assert wrong not in message and KEY not in message
    assert f"Incorrect API key provided: {wrong}" not in json.dumps(message)
    sent = len(_speech(server.log()))
    with pytest.raises(EngineError, match="refused the API key"):
        engine.synthesize(TEXTS[2:3])
    assert len(_speech(server.log())) == sent  # refused once: not sent again
    for name in ("OPENAI_API_KEY", "EBOOK2AUDIO_OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(EngineError, match=r"no API key is set: \$OPENAI_API_KEY"):
        _engine(server.url, key=None).synthesize(TEXTS[:1])


def test_workers_own_key_is_used_when_the_client_sends_none(server, monkeypatch):
    monkeypatch.setenv("EBOOK2AUDIO_OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-less-specific")
    assert len(_engine(server.url, key=None).synthesize(TEXTS[:1])[0]) > 0
    assert _speech(server.log())[-1]["auth"] == "ok"


def test_audio_at_another_rate_is_refused_with_the_rate_to_set(server):
    server.control(always="rate:16000")
    rate_error = (
        r"sent 16000 Hz audio, but ebook2audio.openai.sample-rate is 24000: set it to 16000"
    )
    with pytest.raises(EngineError, match=rate_error):
        _engine(server.url).synthesize(TEXTS[:1])
    assert len(_speech(server.log())) == 1  # not retried: asking again gives the same rate
    with dask.config.set({"ebook2audio.openai.sample-rate": 16000}):
        engine = _engine(server.url)
        [pcm] = engine.synthesize(TEXTS[:1])
    assert engine.sample_rate == 16000 and 0.04 < len(pcm) / 16000 / len(TEXTS[0]) < 0.15


def test_raw_pcm_answers_and_unsupported_formats(server):
    wav = _engine(server.url).synthesize(TEXTS[:2])
    pcm = _engine(server.url, settings={"response_format": "pcm"}).synthesize(TEXTS[:2])
    assert [e["format"] for e in _speech(server.log())][-2:] == ["pcm", "pcm"]
    for a, b in zip(wav, pcm):
        assert abs(len(a) - len(b)) < 0.05 * len(a)
    with pytest.raises(EngineError, match="response_format must be wav or pcm"):
        _engine(server.url, settings={"response_format": "mp3"})
    with pytest.raises(EngineError, match="speed must be a positive number"):
        _engine(server.url, settings={"speed": "fast"})


def test_two_endpoints_share_the_load_and_a_dead_one_is_avoided(servers, server):
    a, b = servers
    engine = _engine(a.url, b.url, concurrency=2)
    assert all(len(x) for x in engine.synthesize(TEXTS * 2))
    assert len(_speech(a.log())) >= 4 and len(_speech(b.log())) >= 4
    assert len(_speech(a.log())) + len(_speech(b.log())) == 16 and sum(engine.requests_sent) == 16
    before = len(_speech(b.log()))
    dead = f"http://127.0.0.1:{_free_port()}/v1"
    engine = _engine(dead, b.url, concurrency=2)
    assert all(len(x) for x in engine.synthesize(TEXTS))
    assert len(_speech(b.log())) - before == len(TEXTS)  # every text reached the live server
    assert engine.requests_sent[0] >= 1  # the dead one was tried, and its texts went elsewhere


def test_a_synthesize_task_keeps_every_slot_busy_whatever_the_lengths(tmp_path):
    from ebook2audio_dask.pipeline.tasks import synthesize_task
    from ebook2audio_dask.storage import ChunkStore

    # lengths 1.35 times apart: a padded-batch engine would get them one per call
    items = tuple((f"{i:064x}", " ".join(TEXTS)[: int(45 * 1.35**i)]) for i in range(8))
    with SpeechServer(tmp_path, key=KEY, latency=0.3) as slow_server:
        spec = EngineSpec("openai", "alloy", (("language", "en"),), "tts-1", "24000 Hz",
                          runtime=tuple(_runtime(slow_server.url).items()))  # fmt: skip
        result = synthesize_task(spec, items, ChunkStore.make(str(tmp_path / "chunks")))
        log = _speech(slow_server.log())
    assert len(result.samples) == 8 and not result.failures
    assert len(log) == 8 and max(e["inflight"] for e in log) >= 3


@settings(max_examples=40, deadline=None, derandomize=True)
@given(samples=st.lists(st.integers(-32768, 32767), min_size=2, max_size=400),
       rate=st.sampled_from([8000, 16000, 22050, 24000, 44100]), cut=st.floats(0, 1))  # fmt: skip
def test_wav_answers_are_read_exactly_or_refused(samples, rate, cut):
    pcm = np.array(samples, dtype=np.int16)
    data = encode_wav(pcm, rate)
    got, got_rate = _wav_samples(data)
    assert got_rate == rate and np.array_equal(got, pcm)
    # a streamed WAV ("until the end" sizes) is read to the end of the body
    streamed = data[:4] + b"\xff\xff\xff\xff" + data[8:40] + b"\xff\xff\xff\xff" + data[44:]
    assert np.array_equal(_wav_samples(streamed)[0], pcm)
    # a stereo answer is mixed down
    stereo = encode_wav(np.repeat(pcm, 2), rate)
    stereo = (
        stereo[:22]
        + (2).to_bytes(2, "little")
        + stereo[24:28]
        + (rate * 4).to_bytes(4, "little")
        + (4).to_bytes(2, "little")
        + stereo[34:]
    )
    assert np.array_equal(_wav_samples(stereo)[0], pcm)
    # a body cut anywhere is refused, never read as shorter audio
    end = int(cut * (len(data) - 1))
    with pytest.raises(EngineError):
        _wav_samples(data[:end])


# ---------------------------------------------------------------------------- end to end
BOOK = (
    "<html lang='en'><head><title>Two Small Chapters</title></head><body>"
    "<h1>The First Chapter</h1><p>{} {}</p><p>{} {}</p>"
    "<h1>The Second Chapter</h1><p>{} {}</p><p>{} {}</p></body></html>"
).format(*TEXTS)


def _leaks(texts: list[str], root: Path) -> list[str]:
    """Where the key shows: in *texts*, in file names or contents under *root*."""
    found = [t[:80] for t in texts if KEY in t]
    for path in root.rglob("*"):
        if KEY in path.name or (path.is_file() and KEY.encode() in path.read_bytes()):
            found.append(str(path))
    return found


@pytest.mark.slow
def test_book_converts_through_the_cli_with_faults_and_reruns_from_cache_elsewhere(
    servers, server, tmp_path
):
    a, b = servers
    book = tmp_path / "book.html"
    book.write_text(BOOK, encoding="utf-8")
    a.control(faults=["429:1", "500", "slow:5"])
    b.control(faults=["503", "truncate"])
    env = {"OPENAI_API_KEY": KEY, "DASK_EBOOK2AUDIO__OPENAI__TIMEOUT": "2",
           "DASK_EBOOK2AUDIO__CHUNK__MAX_CHARS": "120"}  # fmt: skip
    args = [
        "convert",
        str(book),
        "-o",
        str(tmp_path / "out"),
        "--cache",
        str(tmp_path / "chunks"),
        "--engine",
        "openai",
        "--model",
        "tts-1",
        "--voice",
        "alloy",
        "--no-progress",
        "--debug",
    ]
    run = run_cli(*args, "--endpoint", a.url, "--endpoint", b.url, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    report = load_report(tmp_path / "out" / "book.report.json")
    assert [c["title"] for c in report["chapters"]] == ["The First Chapter", "The Second Chapter"]
    check_m4b_against_report(tmp_path / "out" / "book.m4b", report, expect_cover=False)
    spoken = (report["engine"], report["voice"], report["model"], report["sample_rate"])
    assert spoken == ("openai", "alloy", "tts-1", 24000)
    logs = _speech(a.log()) + _speech(b.log())
    n = report["totals"]["unique_chunks"]
    assert n >= 4 and report["totals"]["chunks_synthesized"] == n
    # every fault met, each retried once; both servers spoke
    met = sorted(e["fault"] for e in logs if e["fault"])
    assert met == sorted(["429:1", "500", "slow:5", "503", "truncate"])
    assert len(logs) == n + 5
    assert all(e["auth"] == "ok" for e in logs)
    for s in (a, b):
        assert any(e["status"] == 200 for e in _speech(s.log()))
    assert not _leaks([run.stdout, run.stderr], tmp_path)

    # another server on another port: same content keys, all from the cache
    with SpeechServer(tmp_path / "c", key=KEY) as c:
        again = run_cli(*args, "--endpoint", c.url, env=env)
        assert again.returncode == 0, again.stderr[-3000:]
        assert _speech(c.log()) == []
    totals = load_report(tmp_path / "out" / "book.report.json")["totals"]
    assert totals["chunks_from_cache"] == totals["unique_chunks"] == n
    assert not _leaks([again.stdout, again.stderr], tmp_path)


@pytest.mark.slow
def test_a_refused_key_fails_the_book_in_one_line_without_the_key(server, tmp_path):
    wrong = "sk-wrong-KEY-Qx81"
    book = tmp_path / "book.html"
    book.write_text(BOOK, encoding="utf-8")
    run = run_cli(
        "convert",
        str(book),
        "-o",
        str(tmp_path / "out"),
        "--cache",
        str(tmp_path / "chunks"),
        "--engine",
        "openai",
        "--endpoint",
        server.url,
        "--voice",
        "alloy",
        "--no-progress",
        "--debug",
        "--retries",
        "0",
        env={"OPENAI_API_KEY": wrong},
    )
    assert run.returncode == 1
    dead_letters = (tmp_path / "out" / "book.failures.jsonl").read_text(encoding="utf-8")
    assert "the server refused the API key (HTTP 401)" in dead_letters
    assert "error: " in run.stderr
    for text in (run.stdout, run.stderr, dead_letters):
        assert wrong not in text and "Qx81" not in text
    assert not [p for p in tmp_path.rglob("*") if "Qx81" in p.name]


def test_no_endpoint_is_a_usage_error_before_any_cluster(tmp_path):
    book = tmp_path / "book.html"
    book.write_text(BOOK, encoding="utf-8")
    run = run_cli(
        "convert", str(book), "-o", str(tmp_path / "out"), "--engine", "openai", "--no-progress"
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "error: the openai engine needs a server: --endpoint URL (repeatable; or "
        "ebook2audio.openai.endpoints), e.g. http://127.0.0.1:8880/v1"]  # fmt: skip
    bad = run_cli(
        "convert",
        str(book),
        "-o",
        str(tmp_path / "out"),
        "--engine",
        "openai",
        "--endpoint",
        "ftp://user:pw@host/v1",
        "--no-progress",
    )
    assert bad.returncode == 2 and "bad --endpoint" in bad.stderr and "pw" not in bad.stderr


@pytest.mark.slow
def test_endpoints_and_key_travel_from_the_client_but_never_into_keys_or_logs(
    server, tmp_path, monkeypatch
):
    from distributed import Client

    for name in ("OPENAI_API_KEY", "EBOOK2AUDIO_OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    book = tmp_path / "book.html"
    book.write_text(BOOK, encoding="utf-8")
    with e2a.local_cluster(1, dashboard_address=None) as cluster, Client(cluster) as client:
        # set on the client only, after the workers started: they reach the workers with the tasks
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        with dask.config.set({"ebook2audio.openai.endpoints": [server.url]}):
            [result] = e2a.convert(str(book), str(tmp_path / "out"), engine="openai", voice="alloy",
                                   client=client, cache=str(tmp_path / "chunks"))  # fmt: skip
        assert result.ok, result.error
        keys = client.run_on_scheduler(
            lambda dask_scheduler: [str(t[0]) for t in dask_scheduler.transition_log]
        )
        logs = json.dumps([client.get_scheduler_logs(), client.get_worker_logs()])
        events = json.dumps(client.get_events(), default=str)
    assert any(k.startswith("synthesize-") for k in keys)
    assert not [k for k in keys if KEY in k or server.url in k]
    assert KEY not in logs and KEY not in events
    assert not _leaks([json.dumps(result.report)], tmp_path)
    assert {e["auth"] for e in _speech(server.log())} == {"ok"}
