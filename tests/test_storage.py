"""fsspec helpers and the chunk store (local; S3 is tested with a real server in a later issue)."""

from __future__ import annotations

import os
import stat

import numpy as np

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
