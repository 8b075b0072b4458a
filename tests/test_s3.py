"""Books in, audiobooks out and the chunk store on S3, against a real S3 server (moto) process.

Dask workers run in their own processes and reach the server over HTTP, as
they would reach AWS; nothing is mocked in-process.
"""

from __future__ import annotations

import collections
import json
import os

import numpy as np
import pytest
from helpers import check_m4b_against_report, run_cli
from s3_server import CREDENTIALS, FaultProxy, moto_server

import ebook2audio_dask as e2a

s3fs = pytest.importorskip("s3fs", reason="s3fs is part of the dev install")
pytest.importorskip("moto", reason="moto[server] is part of the dev install")

BOOK = "regime-anticancer-arabic.epub"  # a whole (short) book, spoken by espeak-ng
SECRET = "testing"  # moto accepts any credentials; the secret must still never show
#: Times one request to a missing bucket may be sent (no retry loop with back-off).
MAX_REPEATS = 6  # at most 3 measured (a chunk is looked up more than once)


@pytest.fixture(scope="module")
def s3(tmp_path_factory, corpus):
    """The moto server, credentials in the environment (for worker processes), buckets with a
    book."""
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    try:
        with moto_server() as endpoint:
            fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint})
            for bucket in ("books", "audio", "chunks"):
                fs.mkdir(bucket)
            fs.put_file(str(corpus / BOOK), f"books/{BOOK}")
            fs.put_file(str(corpus / "entre-nous-lectures-francaises.txt"), "books/entre-nous.txt")
            yield endpoint, fs
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def client(s3, client):
    """conftest's two worker processes, started after the credentials are in the environment."""
    return client


def _options(endpoint: str) -> dict:
    return {"s3": {"key": "testing", "secret": SECRET, "client_kwargs": {"endpoint_url": endpoint}}}


def test_whole_book_s3_to_s3_with_the_chunk_store_on_s3_then_all_from_cache(s3, client, tmp_path):
    endpoint, fs = s3
    fs.invalidate_cache()
    opts = _options(endpoint)
    [r] = e2a.convert(
        f"s3://books/{BOOK}",
        "s3://audio/out/",
        cache="s3://chunks/store",
        client=client,
        storage_options=opts,
    )
    assert r.ok, r.error
    assert r.output == "s3://audio/out/regime-anticancer-arabic.m4b"
    assert (
        len(r.report["chunks_per_worker"]) == 2
    )  # both worker processes wrote to the store directly
    fs.invalidate_cache()
    stored = [p for p in fs.find("chunks/store") if p.endswith(".wav")]
    assert len(stored) == r.report["totals"]["unique_chunks"]
    local = tmp_path / "book.m4b"
    fs.get_file("audio/out/regime-anticancer-arabic.m4b", str(local))
    report = json.loads(fs.cat_file("audio/out/regime-anticancer-arabic.report.json"))
    check_m4b_against_report(local, report, expect_cover=True)
    assert not [p for p in fs.find("audio/out") if ".part" in p]  # nothing half-written left
    # a rerun reads every chunk from the store and synthesises nothing
    [again] = e2a.convert(
        f"s3://books/{BOOK}",
        "s3://audio/again/",
        cache="s3://chunks/store",
        client=client,
        storage_options=opts,
    )
    assert again.ok, again.error
    t = again.report["totals"]
    assert t["chunks_from_cache"] == t["unique_chunks"] and t["chunks_synthesized"] == 0
    assert t["audio_reused"]  # the encoded audio kept on S3 was remuxed, nothing re-encoded
    fs.get_file("audio/again/regime-anticancer-arabic.m4b", str(local))
    check_m4b_against_report(local, again.report, expect_cover=True)


def test_transient_storage_errors_are_survived(s3, client, tmp_path):
    endpoint, fs = s3
    proxy = FaultProxy(endpoint)
    try:
        # throttle every request to the chunk store for 3 s, then 20 more chunk requests
        proxy.fail(seconds=3.0, match="/chunks/", status=503, code="SlowDown")
        [r] = e2a.convert(
            "s3://books/entre-nous.txt",
            "s3://audio/faults/",
            chapters=[1, 2],
            cache="s3://chunks/faults",
            client=client,
            storage_options=_options(proxy.url),
        )
        assert r.ok, r.error
        assert proxy.failed > 0, "no fault was injected"
        failed_before = proxy.failed
        proxy.fail(count=20, match="/chunks/", status=500, code="InternalError")
        [r2] = e2a.convert(
            "s3://books/entre-nous.txt",
            "s3://audio/faults2/",
            chapters=[3],
            cache="s3://chunks/faults",
            client=client,
            storage_options=_options(proxy.url),
        )
        assert r2.ok, r2.error
        assert proxy.failed >= failed_before + 20
    finally:
        proxy.close()


def test_a_permanent_storage_error_fails_fast_and_clearly(s3, client):
    """A missing bucket is not retried: a few requests to it, then one clear error.

    Counted through a proxy rather than timed, so a busy machine cannot fail it.
    """
    endpoint, _ = s3
    proxy = FaultProxy(endpoint)  # forwards everything, injects nothing: it only counts
    try:
        [r] = e2a.convert(
            f"s3://books/{BOOK}",
            "s3://audio/x/",
            cache="s3://no-such-bucket/store",
            client=client,
            storage_options=_options(proxy.url),
        )
    finally:
        proxy.close()
    assert not r.ok
    assert "s3://no-such-bucket/store" in r.error and "no such bucket" in r.error
    to_bucket = [
        (method, path) for method, path in proxy.requests if path.startswith("/no-such-bucket")
    ]
    repeats = collections.Counter(to_bucket)
    print(
        f"\n{len(to_bucket)} requests to the missing bucket, {len(repeats)} distinct, "
        f"most repeated: {repeats.most_common(3)}"
    )
    assert to_bucket, "the missing bucket was never asked"
    # each request is sent about once (a chunk is looked up before and after synthesis),
    # not retried with back-off: a retry loop would repeat the same requests many times
    assert max(repeats.values()) <= MAX_REPEATS, repeats.most_common(3)
    [missing] = e2a.convert(
        "s3://books/not-there.epub",
        "s3://audio/x/",
        cache="s3://chunks/store",
        client=client,
        storage_options=_options(endpoint),
    )
    assert not missing.ok and missing.error == "s3://books/not-there.epub: file not found"


def test_cli_endpoint_flag_env_config_and_no_secret_anywhere(s3, tmp_path):
    endpoint, fs = s3
    common = [
        "convert",
        "s3://books/entre-nous.txt",
        "--chapters",
        "4",
        "--workers",
        "1",
        "--no-progress",
    ]
    secret_opts = json.dumps({"key": "testing", "secret": SECRET + "-cli-secret"})
    proc = run_cli(
        *common,
        "-o",
        "s3://audio/cli/",
        "--cache",
        "s3://chunks/cli",
        "--s3-endpoint",
        endpoint,
        "--storage-options",
        secret_opts,
        "--debug",
    )
    assert proc.returncode == 0, proc.stderr
    report = fs.cat_file("audio/cli/entre-nous.report.json").decode()
    for text in (proc.stdout, proc.stderr, report):
        assert SECRET + "-cli-secret" not in text
    # fsspec's own environment configuration (FSSPEC_S3_*) works without any option
    env = {"FSSPEC_S3_ENDPOINT_URL": endpoint}
    proc = run_cli(*common, "-o", "s3://audio/env/", "--cache", "s3://chunks/cli", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "(1/1 chunks from cache" in proc.stdout or "from cache" in proc.stdout
    fs.invalidate_cache()
    assert fs.exists("audio/env/entre-nous.m4b")
    listing = run_cli("inspect", f"s3://books/{BOOK}", "--json", "--s3-endpoint", endpoint)
    assert listing.returncode == 0, listing.stderr
    assert json.loads(listing.stdout)["language"] == "ar"


def test_an_unwritable_s3_output_is_a_usage_error_before_any_cluster(s3):
    """The output is probed (an empty object written and deleted) before a cluster starts."""
    endpoint, fs = s3
    fs.pipe_file("audio/taken.m4b", b"an earlier audiobook")
    common = ["convert", "s3://books/entre-nous.txt", "--s3-endpoint", endpoint, "--no-progress"]
    for output, problem in [
        ("s3://no-such-bucket/out/", "no such bucket"),
        ("s3://audio/taken.m4b", "the output must be a folder, and this is a file"),
    ]:
        proc = run_cli(*common, "-o", output)
        assert proc.returncode == 2, proc.stderr
        assert "dashboard:" not in proc.stderr, "a cluster was started first"
        [line] = [x for x in proc.stderr.splitlines() if x.strip()]
        assert line.startswith(f"error: {output.rstrip('/')}") and problem in line, line
    ok = run_cli(
        "inspect", "s3://books/entre-nous.txt", "--s3-endpoint", endpoint
    )  # reading still works
    assert ok.returncode == 0, ok.stderr
    fs.invalidate_cache()
    assert fs.cat_file("audio/taken.m4b") == b"an earlier audiobook"
    assert not [p for p in fs.find("audio") if ".e2a-probe-" in p]


def test_cache_info_and_prune_on_s3(s3, tmp_path):
    endpoint, fs = s3
    fs.invalidate_cache()
    where = ["--cache", "s3://chunks/store", "--s3-endpoint", endpoint]
    info = json.loads(run_cli("cache", "info", "--json", *where).stdout)
    assert info["chunks"] > 10 and info["engines"]["espeak"]["chunks"] == info["chunks"]
    assert info["encoded_books"] == 1  # the Arabic book's encoded audio, kept for remuxing
    # keep what the Arabic book uses: every chunk in this store is that book's, nothing goes
    kept = run_cli(
        "cache",
        "prune",
        *where,
        "--keep",
        f"s3://books/{BOOK}",
        "--storage-options",
        json.dumps({"s3": {"client_kwargs": {"endpoint_url": endpoint}}}),
        "--dry-run",
    )
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.startswith("would delete 0 object(s)")
    gone = run_cli("cache", "prune", *where, "--older-than", "0")
    assert gone.returncode == 0 and gone.stdout.startswith(
        f"deleted {info['chunks'] + 1} object(s)"
    )
    assert json.loads(run_cli("cache", "info", "--json", *where).stdout)["chunks"] == 0


def test_chunks_are_created_exclusively_on_s3(s3):
    """Two writers of one content-addressed chunk: the first one's object stays, nobody fails."""
    from ebook2audio_dask.storage import ChunkStore

    endpoint, fs = s3
    store = ChunkStore.make("s3://chunks/exclusive", _options(endpoint))
    first = b"RIFF" + (36).to_bytes(4, "little") + b"WAVE" + bytes(24) + b"data" + bytes(4)
    store.write("espeak", "cd" * 20, first)
    store.write("espeak", "cd" * 20, first[:-1] + b"\x01")  # a second writer (If-None-Match: *)
    fs.invalidate_cache()
    assert fs.cat_file(store.path("espeak", "cd" * 20)) == first


@pytest.mark.timeout(300)  # the hang guard: before finite timeouts this waited for ever (a CI run)
def test_a_stuck_connect_times_out_and_is_retried_until_the_store_answers(s3):
    """The store stops completing connections (as a stuck moto_server did in CI), then comes back.

    The first attempt's connect times out (storage.connect-timeout); the retry
    layer logs it and tries again; the store recovers on that log line, and the
    chunk is written and found.  Nothing here is timed.
    """
    import logging

    import dask
    from stall_server import StuckListener

    from ebook2audio_dask.audio.wav import encode_wav
    from ebook2audio_dask.storage import ChunkStore

    endpoint, fs = s3
    retries_logged: list[str] = []
    with StuckListener() as stuck:

        class Recover(logging.Handler):
            def emit(self, record):
                retries_logged.append(record.getMessage())
                stuck.recover(endpoint)  # the store answers again from now on

        handler = Recover(logging.WARNING)
        logger = logging.getLogger("ebook2audio_dask.storage.retry")
        logger.addHandler(handler)
        try:
            with dask.config.set(
                {
                    "ebook2audio.storage.connect-timeout": 1,
                    "ebook2audio.storage.retries": 20,
                    "ebook2audio.storage.retry-seconds": 240,
                }
            ):
                store = ChunkStore.make("s3://chunks/stuck", _options(stuck.url))
                wav = encode_wav(np.arange(500, dtype=np.int16), 22050)
                store.write("espeak", "ef" * 20, wav)
                found = store.sizes("espeak", ["ef" * 20])
        finally:
            logger.removeHandler(handler)
        assert found == {"ef" * 20: len(wav)}
        assert (
            retries_logged
            and "Connect timeout" in retries_logged[0]
            and "retry 1 of 19" in retries_logged[0]
        )
    fs.invalidate_cache()
    assert fs.cat_file(store.path("espeak", "ef" * 20)) == wav
