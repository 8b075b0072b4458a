"""Resource limits of the ingest stage: no whole archive in memory, a too-large book fails clearly.

``read_book`` opens a book as a seekable file through fsspec: an EPUB's
members are read from it one at a time, only those the reader needs, so a
big member it never needs (a font, a video) costs no memory.  A file over
``ingest.max-file-size`` fails at once, before anything is read.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import dask
import pytest
from helpers import traced_peak

from ebook2audio_dask.errors import BookError, UsageError
from ebook2audio_dask.ingest import read_book

MIB = 1024 * 1024
SEED = "regime-anticancer-arabic.epub"  # a small real EPUB 3 (110 kB)


def _with_big_member(corpus: Path, path: Path, size: int) -> Path:
    """The seed EPUB with a stored, incompressible ``fonts/big.bin`` of *size* bytes,
    placed right after ``mimetype`` (so every member the reader needs lies past it)."""
    with zipfile.ZipFile(corpus / SEED) as src, zipfile.ZipFile(path, "w") as out:
        infos = src.infolist()
        out.writestr(infos[0], src.read(infos[0]))  # mimetype, stored, first
        big = zipfile.ZipInfo("EPUB/fonts/big.bin", date_time=(2020, 1, 1, 0, 0, 0))
        big.compress_type = zipfile.ZIP_STORED
        with out.open(big, "w", force_zip64=True) as fh:
            for _ in range(size // MIB):
                fh.write(os.urandom(MIB))
        for info in infos[1:]:
            out.writestr(info, src.read(info))
    return path


def _bytes_read() -> int:
    """Bytes this process has read through read(2) and the like (``rchar``, Linux only):
    a count of the work done that a busy machine does not change."""
    try:
        with open("/proc/self/io") as fh:
            return int(next(line for line in fh if line.startswith("rchar:")).split()[1])
    except OSError:
        pytest.skip("needs /proc/self/io (Linux) to count the bytes read")


def test_a_big_member_the_reader_does_not_need_is_never_loaded(corpus, tmp_path):
    path = _with_big_member(corpus, tmp_path / "big.epub", 200 * MIB)
    assert path.stat().st_size > 200 * MIB
    reference = read_book(str(corpus / SEED))
    before = _bytes_read()
    book, peak = traced_peak(lambda: read_book(str(path)))
    read = _bytes_read() - before
    assert [c.paragraphs for c in book.chapters] == [c.paragraphs for c in reference.chapters]
    assert book.cover is not None and book.cover.data == reference.cover.data
    # the whole archive would be 200 MiB; the members read are ~200 kB (plus parse trees)
    assert peak < 32 * MIB, f"peak Python allocations {peak / MIB:.0f} MiB while reading"
    # nor streamed through (e.g. to check its CRC): only the members needed are read
    assert read < 16 * MIB, f"{read / MIB:.0f} MiB read from disk while reading"


def test_only_the_head_is_read_to_recognise_the_format(tmp_path):
    """A file that is not an ebook is refused after its first 64 kB (of 100 MiB)."""
    path = tmp_path / "noise.bin"
    with open(path, "wb") as fh:
        fh.write(b"\x00\x01\x02\x03" * (16 * 1024))
        fh.truncate(100 * MIB)  # sparse: no disk space taken

    def refused():
        with pytest.raises(BookError) as info:
            read_book(str(path))
        return info.value

    error, peak = traced_peak(refused)
    assert str(error) == f"{path}: not an ebook (unrecognised content)"
    assert peak < 4 * MIB


def test_a_file_over_max_file_size_fails_at_once_without_being_read(tmp_path):
    path = tmp_path / "huge.epub"
    with open(path, "wb") as fh:
        fh.truncate(600 * MIB)  # sparse; never read
    before = _bytes_read()
    with pytest.raises(BookError) as info:
        read_book(str(path))
    assert _bytes_read() - before < 1 * MIB  # refused on its size, not read
    assert str(info.value) == (
        f"{path}: file is 600.00 MiB, over the limit ingest.max-file-size (512.00 MiB)"
    )
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("limit", ["1MiB", 1 * MIB])
def test_max_file_size_is_configurable(corpus, limit):
    book = corpus / "adventures-of-sherlock-holmes-standardebooks.epub"  # 1.44 MiB
    with dask.config.set({"ebook2audio.ingest.max-file-size": limit}):
        with pytest.raises(BookError) as info:
            read_book(str(book))
    assert info.value.problem == "file is 1.44 MiB, over the limit ingest.max-file-size (1.00 MiB)"
    with dask.config.set({"ebook2audio.ingest.max-file-size": "2MiB"}):
        assert read_book(str(book)).chapters


def test_max_file_size_applies_to_text_and_html(corpus, tmp_path):
    for name in ("entre-nous-lectures-francaises.txt", "ontboezemingen-dutch.html"):
        with (
            dask.config.set({"ebook2audio.ingest.max-file-size": "100kB"}),
            pytest.raises(BookError, match=r"over the limit ingest\.max-file-size \(97\.66 kiB\)"),
        ):
            read_book(str(corpus / name))
        assert read_book(str(corpus / name)).chapters


def test_a_bad_max_file_size_is_a_usage_error(corpus):
    for value in ("huge", 0, -5):
        with dask.config.set({"ebook2audio.ingest.max-file-size": value}):
            with pytest.raises(UsageError, match="ingest.max-file-size"):
                read_book(str(corpus / SEED))


def test_an_archive_directory_too_big_to_hold_is_refused(corpus, monkeypatch):
    from ebook2audio_dask.ingest import epub

    monkeypatch.setattr(epub, "MAX_DIRECTORY_BYTES", 512)
    with pytest.raises(BookError) as info:
        read_book(str(corpus / SEED))
    assert info.value.problem.startswith("not a valid EPUB: the archive's directory is ")
    assert info.value.problem.endswith("(11 members), over the 512 B an ebook may take")


def test_a_file_that_grows_past_the_limit_while_read_fails_clearly(tmp_path, monkeypatch):
    from ebook2audio_dask import ingest

    path = tmp_path / "growing.txt"
    path.write_text("Some words. " * 200_000)  # 2.3 MiB, but the size says 1 kB
    monkeypatch.setattr(ingest._BookFile, "size", lambda self: 1000)
    with dask.config.set({"ebook2audio.ingest.max-file-size": "1MiB"}):
        with pytest.raises(BookError) as info:
            read_book(str(path))
    assert info.value.problem == "file is more than the limit ingest.max-file-size (1.00 MiB)"


class _Flaky(io.BytesIO):
    """A file whose reads fail now and then, as a remote store's do."""

    def __init__(self, data: bytes, errors: list[BaseException]):
        super().__init__(data)
        self.errors = errors
        self.reads = 0

    def read(self, n=-1):
        self.reads += 1
        if self.errors:
            self.seek(7, 1)  # a failed attempt may leave the position moved
            raise self.errors.pop(0)
        return super().read(n)


def test_member_reads_are_retried_and_storage_errors_are_book_errors(corpus, monkeypatch):
    """A transient error while reading a member is retried (not taken for a damaged
    archive); a permanent one is a one-line BookError naming the book."""
    from ebook2audio_dask.ingest import _BookFile

    monkeypatch.setattr("tenacity.nap.time.sleep", lambda seconds: None)  # no back-off waits
    data = (corpus / SEED).read_bytes()
    with dask.config.set(
        {"ebook2audio.storage.retries": 3, "ebook2audio.storage.retry-seconds": 10}
    ):
        flaky = _Flaky(data, [ConnectionResetError(104, "Connection reset by peer")])
        f = _BookFile(flaky, "s3://books/x.epub")
        assert f.read(4) == b"PK\x03\x04" and flaky.reads == 2  # retried from the same position
        f.seek(0)
        from ebook2audio_dask.ingest.epub import read_epub

        flaky.errors = [TimeoutError("read timed out")] * 2
        content = read_epub(f, "s3://books/x.epub")
        assert content.sections

        flaky.errors = [PermissionError(13, "Access Denied")]
        f.seek(0)
        with pytest.raises(BookError) as info:
            read_epub(f, "s3://books/x.epub")
        assert str(info.value) == "s3://books/x.epub: permission denied"

        flaky.errors = [ConnectionResetError(104, "reset")] * 5
        f.seek(0)
        with pytest.raises(BookError) as info:
            read_epub(f, "s3://books/x.epub")
        assert str(info.value).startswith(
            "s3://books/x.epub: cannot read the book: still failing after 3 attempts"
        )


def test_books_on_other_file_systems_are_read_the_same_way(corpus):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/limits/book.epub", (corpus / SEED).read_bytes())
    try:
        book = read_book("memory://limits/book.epub")
        assert book.chapters and book.cover is not None
        with (
            dask.config.set({"ebook2audio.ingest.max-file-size": "50kB"}),
            pytest.raises(BookError, match="^memory://limits/book.epub: file is 108.10 kiB, over"),
        ):
            read_book("memory://limits/book.epub")
    finally:
        fs.rm("/limits", recursive=True)
