"""fsspec helpers and the chunk store (local; S3 is tested with a real server in a later issue)."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from ebook2audio_dask.audio.wav import decode_wav, encode_wav
from ebook2audio_dask.storage import ChunkStore, publish_file, write_bytes_atomic
from ebook2audio_dask.storage.fs import get_fs


def test_chunk_store_roundtrip_and_single_listing(tmp_path):
    store = ChunkStore.make(str(tmp_path / "store"))
    assert store.list_sizes("piper") == {}
    pcm = (np.arange(1000) % 200 - 100).astype(np.int16)
    for key in ("aa11", "ab22", "ff33"):
        store.write("piper", key, encode_wav(pcm, 22050))
    # a partial temp file and a stray file are not chunks
    (tmp_path / "store" / "piper" / "aa" / ".aa99.wav.123.part").write_bytes(b"RIFF")
    (tmp_path / "store" / "piper" / "aa" / "tiny.wav").write_bytes(b"x")
    sizes = store.list_sizes("piper")
    assert set(sizes) == {"aa11", "ab22", "ff33"}
    assert all(size == 44 + 2 * len(pcm) for size in sizes.values())
    samples, rate = decode_wav(store.read("piper", "ab22"))
    assert rate == 22050 and np.array_equal(samples, pcm)
    assert store.list_sizes("espeak") == {}
    assert store.path("piper", "ab22").endswith("/piper/ab/ab22.wav")


def test_atomic_writes_leave_no_temp_files_and_normal_permissions(tmp_path):
    fs, path = get_fs(str(tmp_path / "a" / "b.json"))
    write_bytes_atomic(fs, path, b"{}")
    assert (tmp_path / "a" / "b.json").read_bytes() == b"{}"
    local = tmp_path / "tmp.m4b"
    local.write_bytes(b"data")
    os.chmod(local, 0o600)
    publish_file(str(local), str(tmp_path / "out" / "book.m4b"))
    final = tmp_path / "out" / "book.m4b"
    assert final.read_bytes() == b"data" and not local.exists()
    assert stat.S_IMODE(final.stat().st_mode) & 0o044  # readable by others, like any output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["book.m4b"]


def test_transient_errors_are_retried_and_permanent_ones_fail_at_once(monkeypatch):
    import errno

    import dask
    import pytest

    from ebook2audio_dask.errors import StorageError
    from ebook2audio_dask.storage.retry import is_transient, with_retries

    assert is_transient(OSError(errno.EBUSY, "SlowDown")) and is_transient(ConnectionResetError())
    assert is_transient(TimeoutError()) and is_transient(
        OSError(errno.EIO, "503 Service Unavailable")
    )
    assert not is_transient(FileNotFoundError("no bucket")) and not is_transient(
        PermissionError("denied")
    )
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError(errno.EBUSY, "SlowDown: reduce your request rate")
        return "ok"

    with dask.config.set({"ebook2audio.storage.retries": 5}):
        monkeypatch.setattr(
            "time.sleep", lambda s: None
        )  # tenacity's sleep: do not wait in the test
        assert with_retries(flaky, url="s3://b/k", action="read") == "ok" and len(calls) == 3
        calls.clear()

        def missing():
            calls.append(1)
            raise FileNotFoundError("NoSuchBucket")

        with pytest.raises(
            StorageError, match=r"^s3://b/k: cannot write the chunk: no such bucket"
        ):
            with_retries(missing, url="s3://b/k", action="write the chunk")
        assert len(calls) == 1  # permanent: not retried

        def always_busy():
            raise OSError(errno.EBUSY, "SlowDown")

        with pytest.raises(StorageError, match="still failing after 5 attempts"):
            with_retries(always_busy, url="s3://b/k", action="read")


def test_a_truncated_chunk_is_never_trusted(tmp_path):
    import pytest

    from ebook2audio_dask.audio.wav import wav_complete
    from ebook2audio_dask.errors import StorageError

    store = ChunkStore.make(str(tmp_path / "store"))
    wav = encode_wav(np.arange(1000, dtype=np.int16), 22050)
    assert wav_complete(wav) and not wav_complete(wav[:-10]) and not wav_complete(b"RIFF")
    store.write("piper", "ab" * 20, wav)
    path = store.path("piper", "ab" * 20)
    with open(path, "r+b") as fh:  # a crash on a store without atomic writes
        fh.truncate(len(wav) - 100)
    with pytest.raises(
        StorageError, match="chunk is incomplete .* deleted: run the conversion again"
    ):
        store.read("piper", "ab" * 20)
    assert not os.path.exists(path)  # the rerun will synthesise it again
    assert store.list_sizes("piper") == {}


def test_storage_options_per_protocol():
    from ebook2audio_dask.storage.fs import options_for

    def given(url, options):  # what the user gave, without our S3 defaults (tested below)
        out = options_for(url, options)
        out.pop("config_kwargs", None)
        return out

    flat = {"key": "k", "client_kwargs": {"endpoint_url": "http://x"}}
    assert given("s3://b/k", flat) == flat and options_for("/tmp/a", flat) == {}
    keyed = {"s3": {"anon": True}, "gs": {"token": "t"}}
    assert given("s3://b/k", keyed) == {"anon": True} and options_for("gs://b", keyed) == {
        "token": "t"
    }
    assert options_for("memory://x", keyed) == {} and given("s3a://b/k", keyed) == {"anon": True}
    assert (
        "config_kwargs" not in flat and "config_kwargs" not in keyed["s3"]
    )  # the caller's dicts untouched


def test_s3_gets_finite_timeouts_and_the_users_options_win():
    import dask

    from ebook2audio_dask.storage.fs import options_for

    ours = options_for("s3://b/k", None)["config_kwargs"]
    assert ours == {"connect_timeout": 10.0, "read_timeout": 30.0,
                    "retries": {"total_max_attempts": 1, "mode": "standard"}}  # fmt: skip
    with dask.config.set(
        {"ebook2audio.storage.connect-timeout": 2, "ebook2audio.storage.read-timeout": None}
    ):
        assert options_for("s3://b/k", {})["config_kwargs"] == {
            "connect_timeout": 2.0,
            "retries": ours["retries"],
        }
    user = {"s3": {"config_kwargs": {"read_timeout": 300, "retries": {"max_attempts": 9}}}}
    assert options_for("s3://b/k", user)["config_kwargs"] == {
        "connect_timeout": 10.0,
        "read_timeout": 300,
        "retries": {"max_attempts": 9},
    }
    assert options_for("gs://b/k", None) == {} and options_for("/tmp/a", None) == {}
    fs, _ = get_fs("s3://b/k", {"key": "k", "secret": "s", "config_kwargs": {"read_timeout": 7}})
    assert fs.config_kwargs == {
        "connect_timeout": 10.0,
        "read_timeout": 7,
        "retries": ours["retries"],
    }


def test_timeouts_are_transient():
    import asyncio

    import aiohttp
    from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError
    from fsspec.exceptions import FSTimeoutError

    from ebook2audio_dask.storage.retry import is_transient

    for exc in (
        ConnectTimeoutError(endpoint_url="http://x"),
        ReadTimeoutError(endpoint_url="http://x"),
        aiohttp.ConnectionTimeoutError(),
        aiohttp.SocketTimeoutError(),
        aiohttp.ServerTimeoutError(),
        asyncio.TimeoutError(),
        FSTimeoutError(),
    ):
        assert is_transient(exc), exc
    wrapped = OSError("cannot look up")  # a timeout under another library's error is still one
    wrapped.__cause__ = ReadTimeoutError(endpoint_url="http://x")
    assert is_transient(wrapped)


def _storage_config(**values):
    import dask

    return dask.config.set(
        {f"ebook2audio.storage.{k.replace('_', '-')}": v for k, v in values.items()}
    )


def _s3_store(endpoint: str) -> ChunkStore:
    client_kwargs = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    return ChunkStore.make(
        "s3://bucket/store", {"key": "k", "secret": "s", "client_kwargs": client_kwargs}
    )


@pytest.mark.timeout(120)  # the hang guard: s3fs's defaults alone took over 6 minutes for this call
@pytest.mark.parametrize("server", ["silent", "stuck"])
def test_a_store_that_never_answers_is_a_one_line_error_not_a_hang(server):
    """The CI hang: a chunk lookup waited for ever on a server that did not answer.

    "silent" accepts the connection and never answers (read timeout); "stuck"
    never completes the connection (its accept queue is full: connect timeout).
    """
    from stall_server import SilentServer, StuckListener

    from ebook2audio_dask.errors import StorageError

    with SilentServer() if server == "silent" else StuckListener() as srv:
        with _storage_config(connect_timeout=1, read_timeout=1, retries=2, retry_seconds=30):
            with pytest.raises(StorageError) as err:
                _s3_store(srv.url).sizes("espeak", ["ab" * 20])
        message = str(err.value)
        assert "\n" not in message and message.startswith(
            f"s3://bucket/store/espeak/ab/{'ab' * 20}.wav: "
        )
        assert (
            "still failing after 2 attempts" in message
        )  # retried by storage.retry, then given up
        assert ("Read timeout" if server == "silent" else "Connect timeout") in message
        if server == "silent":
            assert srv.connections >= 2  # each attempt reached the server, and gave up waiting
