"""Output names within 255 bytes, short temporary names, and all-or-nothing publication of a book.

The end-to-end tests run the CLI on tiny generated books with espeak (a few
seconds each); the naming function is checked with hypothesis on arbitrary
Unicode, the publication on a local folder and on a real S3 server (moto).
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest
from helpers import load_report, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebook2audio_dask.errors import StorageError
from ebook2audio_dask.storage.fs import (
    Publication,
    get_fs,
    publish_file,
    temp_name,
    write_bytes_atomic,
)
from ebook2audio_dask.storage.names import NAME_MAX, book_stem, chapter_name, fit_name, part_name

SUFFIXES = (".m4b", ".opus", ".report.json", ".failures.jsonl", ".srt")
# Characters of several bytes each, marks and joiners: names that pass 255 bytes quickly.
WIDE = st.sampled_from(list("กขคงสวัดีครับ漢字の題名नमस्तेक्ष😀👍🏽👨‍👩‍👧🇯🇵éa ."))
LONG = st.text(alphabet=WIDE, min_size=60, max_size=220)
ANY = st.text(max_size=300)  # every Unicode character but surrogates, control characters included


def _size(name: str) -> int:
    return len(name.encode("utf-8"))  # strict: a split or invalid sequence raises


def _check(name: str) -> None:
    assert _size(name) <= NAME_MAX, (_size(name), name)
    assert "/" not in name and "\x00" not in name


# --------------------------------------------------------------------------- the naming function
@settings(
    max_examples=60, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    stem=st.one_of(ANY, LONG, LONG.map(lambda s: s * 3)),
    title=st.one_of(ANY, LONG, LONG.map(lambda s: s * 2)),
)
def test_every_name_fits_255_bytes_is_valid_utf8_stable_and_safe(stem, title):
    base = book_stem(stem)
    _check(base)
    assert _size(base) <= NAME_MAX - 32  # room for every suffix of the book's names
    assert book_stem(stem) == base  # stable
    for suffix in SUFFIXES:
        name = fit_name(base, suffix)
        _check(name)
        assert name == base + suffix  # every name of a book starts with the same stem
    for n, total in ((1, 3), (12, 40), (999, 999)):
        name = part_name(base, n, total, ".flac")
        _check(name)
        assert name.endswith(f" - Part {n} of {total}.flac")
    name = chapter_name("07", title, ".opus")
    _check(name)
    assert (
        name.startswith("07 - ")
        and name.endswith(".opus")
        and "\\" not in name
        and "\n" not in name
    )
    assert chapter_name("07", title, ".opus") == name


@settings(max_examples=60, derandomize=True, deadline=None)
@given(head=LONG, a=st.text(max_size=80), b=st.text(max_size=80))
def test_distinct_long_names_stay_distinct_and_keep_their_start(head, a, b):
    a, b = (head * 2 + a).replace("/", "_"), (head * 2 + b).replace("/", "_")
    for suffix in ("", ".m4b", ".failures.jsonl"):
        fa, fb = fit_name(a, suffix), fit_name(b, suffix)
        _check(fa)
        assert (fa == fb) == (a == b)
        if fa != a + suffix:  # shortened: a start of the name, "~", 8 hex digits of its SHA-1
            kept, tag = fa[: -len(suffix) or None].rsplit("~", 1)
            assert a.startswith(kept) and len(tag) == 8 and int(tag, 16) >= 0
            # never cut before a character that belongs to the one before it
            assert (
                not unicodedata.category(a[len(kept)]).startswith("M") and a[len(kept)] != "\u200d"
            )


def test_shortening_examples():
    assert fit_name("Book", ".m4b") == "Book.m4b"
    assert book_stem("x" * 208) == "x" * 208  # fits with every suffix: unchanged
    long = "x" * 250
    assert (
        book_stem(long)
        == "x" * 214 + "~" + __import__("hashlib").sha1(long.encode()).hexdigest()[:8]
    )
    thai = fit_name("สวัสดีครับ" * 30, ".m4b")  # vowel and tone marks stay with their consonant
    kept = thai.split("~")[0]
    assert _size(thai) <= 255 and ("สวัสดีครับ" * 30).startswith(kept)
    assert not unicodedata.category(("สวัสดีครับ" * 30)[len(kept)]).startswith("M")
    family = fit_name("👨‍👩‍👧" * 30, "")  # a ZWJ sequence is kept whole
    assert family.split("~")[0].endswith("👧")
    conjunct = fit_name("क्ष" * 100, "")  # so is an Indic conjunct (consonant, virama, consonant)
    assert conjunct.split("~")[0].endswith("क्ष")
    assert book_stem("a/b") == "a b" and book_stem("..") == "book"


# --------------------------------------------------------------------------- temporary names
def test_temporary_names_are_short_so_a_long_final_name_can_be_written(tmp_path):
    assert len(temp_name()) == 22 and temp_name().startswith(".e2a-")
    long = tmp_path / ("é" * 125 + ".m4b")  # 254 bytes: the old ".<name>.<uuid>.part" was 294
    fs, path = get_fs(str(long))
    write_bytes_atomic(fs, path, b"audio")
    source = tmp_path / "encoded.m4b"
    source.write_bytes(b"other")
    publish_file(str(source), str(tmp_path / ("ü" * 125 + ".m4b")))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["é" * 125 + ".m4b", "ü" * 125 + ".m4b"]
    )


# --------------------------------------------------------------------------- publication, local
def _stage(folder: Path, files: dict[str, bytes]) -> Publication:
    publication = Publication()
    for name, data in files.items():
        local = folder.parent / f"work-{name}"
        local.write_bytes(data)
        publication.stage_file(str(local), str(folder / name))
    return publication


def test_a_failed_publication_restores_the_earlier_files_and_leaves_nothing_new(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "book.m4b").write_bytes(b"old audio")  # an earlier run's good book
    inode = (out / "book.m4b").stat().st_ino
    publication = _stage(out, {"book.m4b": b"new audio", "book.srt": b"subs"})
    publication.stage_bytes(b"{}", str(out / "book.report.json"))
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["book.m4b"]
    os.unlink(publication.files[-1][0])  # the report's temporary file vanishes before the commit
    with pytest.raises(StorageError):
        publication.commit()
    assert sorted(p.name for p in out.iterdir()) == ["book.m4b"]  # no temporary or kept copies left
    assert (out / "book.m4b").read_bytes() == b"old audio" and (
        out / "book.m4b"
    ).stat().st_ino == inode

    (out / "book.failures.jsonl").write_bytes(b"{}\n")  # stale: removed once the book is published
    publication = _stage(out, {"book.m4b": b"new audio", "book.srt": b"subs"})
    publication.stale.append(str(out / "book.failures.jsonl"))
    publication.commit()
    assert sorted(p.name for p in out.iterdir()) == ["book.m4b", "book.srt"]
    assert (out / "book.m4b").read_bytes() == b"new audio"


def test_a_folder_in_the_way_stops_the_publication_before_anything_moves(tmp_path):
    out = tmp_path / "out"
    publication = Publication()
    publication.own_folder(str(out / "book"))
    (tmp_path / "one").write_bytes(b"1")
    (tmp_path / "two").write_bytes(b"2")
    publication.stage_file(str(tmp_path / "one"), str(out / "book" / "01 - One.mp3"))
    publication.stage_file(str(tmp_path / "two"), str(out / "book" / "02 - Two.mp3"))
    (out / "book" / "02 - Two.mp3").mkdir()
    with pytest.raises(StorageError, match="a folder is in the way"):
        publication.commit()
    assert [p.name for p in (out / "book").iterdir()] == [
        "02 - Two.mp3"
    ]  # the user's folder, alone
    publication = Publication()
    publication.own_folder(str(out / "other"))
    publication.discard()
    assert not (out / "other").exists()


# --------------------------------------------------------------------------- publication, S3
def test_publication_on_s3_is_all_or_nothing(tmp_path, monkeypatch):
    s3fs = pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    from s3_server import CREDENTIALS, moto_server

    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    with moto_server() as endpoint:
        options = {"s3": {"client_kwargs": {"endpoint_url": endpoint}}}
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint})
        fs.mkdir("audio")
        fs.pipe_file("audio/out/book.m4b", b"old audio")

        def stage() -> Publication:
            publication = Publication()
            (tmp_path / "a").write_bytes(b"new audio")
            publication.stage_file(str(tmp_path / "a"), "s3://audio/out/book.m4b", options)
            publication.stage_bytes(b"{}", "s3://audio/out/book.report.json", options)
            return publication

        publication = stage()
        assert fs.cat_file("audio/out/book.m4b") == b"old audio"  # staged: nothing final yet
        fs.rm_file(
            publication.files[-1][0].removeprefix("s3://")
        )  # the report's temporary object vanishes
        with pytest.raises(StorageError):
            publication.commit(options)
        fs.invalidate_cache()
        assert fs.find("audio/out") == ["audio/out/book.m4b"]
        assert fs.cat_file("audio/out/book.m4b") == b"old audio"

        stage().commit(options)
        fs.invalidate_cache()
        assert fs.find("audio/out") == ["audio/out/book.m4b", "audio/out/book.report.json"]
        assert fs.cat_file("audio/out/book.m4b") == b"new audio"


# ------------------------------------------------------------------------- end to end (CLI, espeak)
def _txt_book(path: Path, title: str) -> Path:
    path.write_text(
        f"Title: {title}\n\n\n\nChapter 1: One\n\nA short book, read aloud by espeak.\n\n\n\n"
        "Chapter 2: Two\n\nIts second chapter is short too.\n",
        encoding="utf-8",
    )
    return path


def _convert(books, out: Path, cache: str, *args: str):
    return run_cli(
        "convert",
        *map(str, books),
        "-o",
        str(out),
        "--engine",
        "espeak",
        "--cache",
        cache,
        "--workers",
        "1",
        "--no-progress",
        *args,
    )


def _names_fit(out: Path) -> list[Path]:
    files = [p for p in out.rglob("*")]
    for p in files:
        assert _size(p.name) <= NAME_MAX
        assert not p.name.startswith("."), f"temporary file left: {p}"
    return files


def test_cli_long_stems_are_published_with_their_reports(tmp_path, cache_dir):
    """A 208-byte stem keeps its name; a 250-byte one is shortened (with a hash) for every
    output."""
    books = tmp_path / "books"
    books.mkdir()
    fits, long = "ü" * 104, "Ω" * 125  # 208 and 250 bytes
    _txt_book(books / f"{fits}.txt", "Fits")
    _txt_book(books / f"{long}.txt", "Long")
    out = tmp_path / "out"
    proc = _convert(
        [books / f"{fits}.txt", books / f"{long}.txt"], out, cache_dir, "--subtitles", "srt"
    )
    assert proc.returncode == 0, proc.stderr
    _names_fit(out)
    short = book_stem(long)
    assert short != long and short.startswith("Ω" * 107) and _size(short) == 223
    for stem in (fits, short):
        report = load_report(out / f"{stem}.report.json")
        assert report["output"] == str(out / f"{stem}.m4b")
        assert (out / f"{stem}.m4b").stat().st_size > 1000 and (out / f"{stem}.srt").exists()

    proc = _convert([books / f"{long}.txt"], out / "parts", cache_dir, "--split-hours", "0.001")
    assert proc.returncode == 0, proc.stderr
    report = load_report(out / "parts" / f"{short}.report.json")
    n = len(report["outputs"])
    assert n >= 2
    names = [Path(o["url"]).name for o in report["outputs"]]
    assert names == [f"{short} - Part {i} of {n}.m4b" for i in range(1, n + 1)]
    assert all(Path(o["url"]).exists() for o in report["outputs"])
    _names_fit(out)


def test_cli_split_chapters_with_long_thai_cjk_and_devanagari_titles(tmp_path, cache_dir):
    # 70, 70, 70 and 128 characters: 210 bytes and more
    titles = ["สวัสดีครับ" * 7, "漢字の題名" * 14, "नमस्ते दुनिया " * 5, "ความยาวของชื่อบท" * 8]
    book = tmp_path / "titles.md"
    text = "".join(f"# {t}\n\nThe text of chapter {i}.\n\n" for i, t in enumerate(titles, 1))
    book.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    proc = _convert(
        [book], out, cache_dir, "--split", "chapters", "--subtitles", "vtt", "--format", "mp3"
    )
    assert proc.returncode == 0, proc.stderr
    report = load_report(out / "titles.report.json")
    files = [Path(o["url"]) for o in report["outputs"]]
    assert [f.name for f in files[:3]] == [
        f"0{i} - {t.strip()}.mp3" for i, t in enumerate(titles[:3], 1)
    ]
    assert "~" in files[3].name and files[3].name.startswith("04 - ความยาว")  # 393 bytes: shortened
    for f in files:
        assert (
            f.parent == out / "titles"
            and f.stat().st_size > 1000
            and f.with_suffix(".vtt").exists()
        )
    _names_fit(out)


def test_cli_a_book_that_fails_late_leaves_nothing_at_its_final_paths(tmp_path, cache_dir):
    """The report (or a later chapter file) cannot be written: exit 1, none of the book's new
    files at their final paths, an earlier run's file untouched; the other book finishes."""
    books = tmp_path / "books"
    books.mkdir()
    first, other = _txt_book(books / "first.txt", "First"), _txt_book(books / "other.txt", "Other")
    out = tmp_path / "out"
    (out / "first.report.json").mkdir(parents=True)  # in the way of the report
    (out / "first.report.json" / "keep").write_text("a user's file")
    proc = _convert([first, other], out, cache_dir)
    assert proc.returncode == 1
    assert not (out / "first.m4b").exists()
    assert "first.txt" in proc.stderr and "folder is in the way" in proc.stderr
    assert (out / "other.m4b").stat().st_size > 1000 and (out / "other.report.json").exists()
    _names_fit(out)

    # a rerun over an earlier good book: its audio is left as it was (same file, not replaced)
    (out / "first.report.json" / "keep").unlink()
    (out / "first.report.json").rmdir()
    assert _convert([first], out, cache_dir).returncode == 0
    before = (out / "first.m4b").stat()
    (out / "first.report.json").unlink()
    (out / "first.report.json").mkdir()
    proc = _convert([first], out, cache_dir)
    assert proc.returncode == 1
    after = (out / "first.m4b").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    (out / "first.report.json").rmdir()

    # --split chapters: a later chapter's file cannot be written: not even the first one is left
    (out / "first" / "02 - Chapter 2 Two.m4b").mkdir(parents=True)
    proc = _convert([first], out, cache_dir, "--split", "chapters")
    assert proc.returncode == 1, proc.stderr
    assert [p.name for p in (out / "first").iterdir()] == ["02 - Chapter 2 Two.m4b"]
    assert not (out / "first.report.json").exists()
    _names_fit(out)
