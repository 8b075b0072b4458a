"""``--layout audiobookshelf``: ``<output>/<Author>/<Title>/`` with the files Audiobookshelf reads.

The end-to-end tests run the CLI with espeak on tiny books the tests write
(HTML with a title and author, FB2 with a cover), then read what was written
with independent readers: ``json`` for ``metadata.json`` (checked against the
fields Audiobookshelf's scanner takes), mutagen for the M4B's chapters, the
JPEG magic and ffmpeg for ``cover.jpg``.  Folder names are checked with
hypothesis on arbitrary Unicode.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import unicodedata
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from helpers import load_report, run_cli, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

from ebook2audio_dask.audio.ffmpeg import ffmpeg_exe
from ebook2audio_dask.storage.audiobookshelf import (
    author_folder,
    cover_jpeg,
    epub_description,
    folder_name,
    metadata_json,
    narrator,
    place_book,
    sidecar_files,
)
from ebook2audio_dask.storage.names import NAME_MAX

#: The keys of the metadata.json Audiobookshelf writes (flat form, v2.5 and later).
ABS_KEYS = {
    "tags", "chapters", "title", "subtitle", "authors", "narrators", "series", "genres",
    "publishedYear", "publishedDate", "publisher", "description", "isbn", "asin", "language",
    "explicit", "abridged",
}  # fmt: skip
RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{n}" for p in ("COM", "LPT") for n in range(10)}
JPEG = b"\xff\xd8\xff"


def _size(name: str) -> int:
    return len(name.encode("utf-8"))  # strict: an invalid sequence raises


def _check_name(name: str) -> None:
    assert name and _size(name) <= NAME_MAX, (_size(name), name)
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert not name.startswith((".", " ")) and not name.endswith((".", " ")), name
    assert name not in (".", "..")
    assert unicodedata.normalize("NFC", name) == name
    assert not any(unicodedata.category(c) == "Cc" for c in name), name
    assert name.split(".")[0].rstrip().upper() not in RESERVED, name


# --------------------------------------------------------------------------- names
@settings(max_examples=150, derandomize=True, deadline=None)
@given(text=st.text(max_size=400), fallback=st.text(max_size=40))
def test_every_folder_name_is_one_safe_component_within_255_bytes(text, fallback):
    name = folder_name(text, fallback)
    _check_name(name)
    assert folder_name(text, fallback) == name  # stable


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("AC/DC", "AC DC"),
        ("..", "stem"),
        ("../../etc/passwd", "etc passwd"),
        (".hidden", "hidden"),
        ("CON", "CON_"),
        ("com1.txt", "com1_.txt"),
        ("Nul ", "Nul_"),
        ("a\nb\tc\x7fd", "a b c d"),
        ("e\u0301t\u00e9\u202e", "\u00e9t\u00e9"),  # NFC; the bidi override goes
        ('What? A "title": <yes>|no*', "What A title yes no"),
    ],
)
def test_folder_name_examples(text, want):
    assert folder_name(text, "stem") == want


def test_a_300_byte_title_is_shortened_with_a_hash():
    title = "Ω" * 150  # 300 bytes
    name = folder_name(title)
    assert _size(name) <= NAME_MAX and name.startswith("Ω" * 100) and "~" in name
    assert folder_name(title + "x") != name  # two long titles that start alike stay apart


def test_author_folder():
    assert author_folder(["Jane Austen"]) == "Jane Austen"
    assert author_folder(["Ichiro Kishimi", "Fumitake Koga"]) == "Ichiro Kishimi & Fumitake Koga"
    assert author_folder(["Kishimi, Ichiro"]) == "Kishimi, Ichiro"
    assert author_folder([]) is None
    assert author_folder(["", " / ", ".."]) is None  # nothing left: no author folder
    assert author_folder(["AC/DC", "  "]) == "AC DC"


def test_place_book_one_file_parts_and_chapters():
    one = place_book("/out", "Emma", ["Jane Austen"], "emma", ".m4b", None)
    assert one.folder == "/out/Jane Austen/Emma" and one.name == "Emma"
    assert one.output == "/out/Jane Austen/Emma/Emma.m4b"
    assert one.file(".report.json") == "/out/Jane Austen/Emma/Emma.report.json"
    # split by hours: the parts are named after the output, in the same folder
    assert place_book("/out", "Emma", ["Jane Austen"], "e", ".mp3", "hours").output == (
        "/out/Jane Austen/Emma/Emma.mp3"
    )
    # by chapters the merge writes <dirname>/<stem>/<NN> - <title>: the title folder itself
    chapters = place_book("s3://b/out/", "Emma", [], "emma", ".mp3", "chapters")
    assert chapters.folder == "s3://b/out/Emma" and chapters.output == "s3://b/out/Emma.mp3"
    # no title: the input's stem; nothing usable: "book"
    assert place_book("/o", " ", ["A"], "my-book", ".m4b", None).folder == "/o/A/my-book"
    assert place_book("/o", "..", [".."], "..", ".m4b", None).folder == "/o/book"
    long = place_book("/o", "ü" * 150, ["A"], "x", ".m4b", None)  # 300 bytes
    folder = long.folder.rsplit("/", 1)[1]
    assert _size(folder) <= NAME_MAX and _size(long.name) <= NAME_MAX - 32
    assert _size(long.file(".failures.jsonl").rsplit("/", 1)[1]) <= NAME_MAX


def test_narrator_never_names_a_path_nor_splits():
    assert narrator("espeak", "en-us") == "espeak (en-us)"
    assert narrator("piper") == "piper"
    assert narrator("xtts", "/home/me/voices/my, voice.wav") == "xtts (my voice.wav)"
    assert narrator("kokoro", "af_heart;am_adam") == "kokoro (af_heart am_adam)"


def test_metadata_json_is_audiobookshelfs_form():
    report = {
        "title": "Emma\n", "authors": ["Jane Austen", ""], "language": "en",
        "engine": "espeak", "voice": "en",
        "chapters": [{"title": "One", "start_s": 0.0, "end_s": 5.25},
                     {"title": "", "start_s": 5.25, "end_s": 9.5}],
    }  # fmt: skip
    data = json.loads(metadata_json(report, description="A novel."))
    assert set(data) == ABS_KEYS
    assert data["title"] == "Emma" and data["authors"] == ["Jane Austen"]
    assert data["narrators"] == ["espeak (en)"] and data["language"] == "en"
    assert data["description"] == "A novel."
    assert data["chapters"] == [
        {"id": 0, "start": 0.0, "end": 5.25, "title": "One"},
        {"id": 1, "start": 5.25, "end": 9.5, "title": "Chapter 2"},  # the scanner needs a title
    ]
    files = dict(sidecar_files(report, description="  A novel. "))
    assert files["desc.txt"] == b"A novel.\n" and files["reader.txt"] == b"espeak (en)\n"
    assert "cover.jpg" not in files
    assert "desc.txt" not in dict(sidecar_files(report))


def _png(path: Path, size: str = "64x96") -> bytes:
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
         f"color=c=0x3366cc@0.5:s={size},format=rgba", "-frames:v", "1", "-y", str(path)],
        check=True,
    )  # fmt: skip
    return path.read_bytes()


def _image_size(data: bytes, tmp: Path) -> str:
    path = tmp / "probe.jpg"
    path.write_bytes(data)
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
    )
    line = next(ln for ln in proc.stderr.splitlines() if "Video: mjpeg" in ln)
    return next(w.strip(",") for w in line.split() if "x" in w and w.split("x")[0].isdigit())


def test_cover_jpeg_keeps_a_jpeg_and_converts_a_png(tmp_path):
    png = _png(tmp_path / "c.png")
    jpeg = cover_jpeg(png, ".png")
    assert jpeg is not None and jpeg[:3] == JPEG
    assert _image_size(jpeg, tmp_path) == "64x96"
    assert cover_jpeg(jpeg, ".jpeg") is jpeg
    assert cover_jpeg(b"not an image", ".png") is None


CONTAINER = (
    '<?xml version="1.0"?><container version="1.0" '
    'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
    '<rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
    "</rootfiles></container>"
)


def _write_epub(path: Path, package: str, files: dict[str, str | bytes] | None = None) -> Path:
    """An EPUB: mimetype, container, ``OEBPS/content.opf`` = *package*, and *files*."""
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        z.writestr("META-INF/container.xml", CONTAINER)
        z.writestr("OEBPS/content.opf", package)
        for name, data in (files or {}).items():
            z.writestr(name, data)
    return path


def _epub(path: Path, metadata: str, *, doctype: str = "") -> Path:
    """A minimal EPUB (container and package document only: enough for its description)."""
    return _write_epub(
        path,
        f'<?xml version="1.0"?>{doctype}<package xmlns="http://www.idpf.org/2007/opf" '
        'version="3.0"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<dc:title>T</dc:title>{metadata}</metadata></package>",
    )


def test_epub_description_plain_text_and_hostile(tmp_path):
    escaped = (
        "&lt;p&gt;A &lt;i&gt;fine&lt;/i&gt; novel &amp;amp; more.&lt;/p&gt;&lt;p&gt;Two.&lt;/p&gt;"
    )
    book = _epub(tmp_path / "a.epub", f"<dc:description>{escaped}</dc:description>")
    assert epub_description(str(book)) == "A fine novel & more.\nTwo."
    assert epub_description(str(_epub(tmp_path / "none.epub", ""))) is None
    xxe = _epub(
        tmp_path / "xxe.epub",
        "<dc:description>&secret;</dc:description>",
        doctype=f'<!DOCTYPE package [<!ENTITY secret SYSTEM "file://{tmp_path}/secret">]>',
    )
    (tmp_path / "secret").write_text("SECRET")
    assert "SECRET" not in (epub_description(str(xxe)) or "")
    (tmp_path / "junk.epub").write_bytes(b"not a zip")
    assert epub_description(str(tmp_path / "junk.epub")) is None
    assert epub_description(str(tmp_path / "missing.epub")) is None
    assert epub_description(str(_html_book(tmp_path / "b.html", "B", "A"))) is None


# --------------------------------------------------------------------------- end to end
def _html_book(path: Path, title: str, author: str) -> Path:
    path.write_text(
        f"<html><head><title>{escape(title)}</title>"
        f'<meta name="author" content="{escape(author, {chr(34): "&quot;"})}"></head><body>'
        "<h1>Chapter One</h1><p>A short book, read aloud by espeak.</p>"
        "<h1>Chapter Two</h1><p>Its second chapter is short too.</p></body></html>",
        encoding="utf-8",
    )
    return path


def _fb2_book(path: Path, title: str, first: str, last: str, cover: bytes) -> Path:
    e = escape
    data = base64.encodebytes(cover).decode("ascii")
    path.write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<FictionBook xmlns="http://www.gribuser.ru/xml/fictionbook/2.0" '
        'xmlns:l="http://www.w3.org/1999/xlink"><description><title-info><genre>prose</genre>'
        f"<author><first-name>{e(first)}</first-name><last-name>{e(last)}</last-name></author>"
        f"<book-title>{e(title)}</book-title>"
        '<coverpage><image l:href="#cover.png"/></coverpage><lang>en</lang></title-info>'
        "</description><body>"
        "<section><title><p>First Part</p></title><p>The first part is short.</p></section>"
        "<section><title><p>Second Part</p></title><p>So is the second one.</p></section>"
        f'</body><binary id="cover.png" content-type="image/png">{data}</binary></FictionBook>',
        encoding="utf-8",
    )
    return path


def _convert(books, out: Path, cache: str, *args: str):
    return run_cli(
        "convert", *map(str, books), "-o", str(out), "--engine", "espeak", "--cache", cache,
        "--workers", "1", "--no-progress", "--layout", "audiobookshelf", *args,
    )  # fmt: skip


def _tree(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in sorted(root.rglob("*"))
        if p.is_file() or p.is_symlink()
    }


def _check_book(
    folder: Path,
    title: str | None,
    authors: list[str],
    *,
    cover: bool,
    subtitles: bool = True,
    description: str | None = None,
) -> dict:
    """The book's folder holds its audio, report, subtitles and the sidecar files, and
    metadata.json agrees with the report and with the M4B's own chapters."""
    from mutagen.mp4 import MP4

    [report_path] = folder.glob("*.report.json")
    report = load_report(report_path)
    m4b = Path(report["output"])
    assert m4b.parent == folder and m4b.stat().st_size > 1000
    assert m4b.with_suffix(".srt").is_file() is subtitles
    meta = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    assert set(meta) == ABS_KEYS
    assert meta["title"] == report["title"] and meta["authors"] == authors
    assert title is None or meta["title"] == title
    assert meta["narrators"] == ["espeak (" + report["voice"] + ")"]
    assert meta["language"] == report["language"] == "en"
    chapters = list(MP4(str(m4b)).chapters)
    assert [c["title"] for c in meta["chapters"]] == [c.title for c in chapters]
    assert [c["id"] for c in meta["chapters"]] == list(range(len(chapters)))
    for got, want in zip(meta["chapters"], chapters):
        assert abs(got["start"] - want.start) < 0.05
    assert meta["chapters"][-1]["end"] == pytest.approx(report["totals"]["audio_s"], abs=0.01)
    assert all(a["end"] == b["start"] for a, b in zip(meta["chapters"], meta["chapters"][1:]))
    assert (folder / "reader.txt").read_text(encoding="utf-8") == meta["narrators"][0] + "\n"
    assert meta["description"] == description
    if description is None:
        assert not (folder / "desc.txt").exists()
    else:
        assert (folder / "desc.txt").read_text(encoding="utf-8") == description + "\n"
    if cover:
        assert (folder / "cover.jpg").read_bytes()[:3] == JPEG
    else:
        assert not (folder / "cover.jpg").exists()
    return report


def test_cli_two_books_of_one_author_and_hostile_names(tmp_path, cache_dir):
    """Two books of one author share its folder; "/" and ".." in a title or author and a
    300-byte title make safe names inside the output folder; a rerun replaces every file
    cleanly (the same files, nothing left over)."""
    books = tmp_path / "books"
    books.mkdir()
    _html_book(books / "emma.html", "Emma", "Jane Austen")
    _html_book(books / "persuasion.html", "Persuasion", "Jane Austen")
    _fb2_book(books / "evil.fb2", "../../escape/me", "AC/DC", "..", _png(tmp_path / "c.png"))
    long_title = "Ω" * 150  # 300 bytes
    _html_book(books / "long.html", long_title, "Anonymous")
    out = tmp_path / "library" / "out"
    proc = _convert([books], out, cache_dir, "--subtitles", "srt")
    assert proc.returncode == 0, proc.stderr

    austen = out / "Jane Austen"
    assert sorted(p.name for p in austen.iterdir()) == ["Emma", "Persuasion"]
    _check_book(austen / "Emma", "Emma", ["Jane Austen"], cover=False)
    _check_book(austen / "Persuasion", "Persuasion", ["Jane Austen"], cover=False)
    assert (austen / "Emma" / "Emma.m4b").is_file()

    evil = out / "AC DC" / "escape me"  # the author "AC/DC .." and the title made safe
    report = _check_book(evil, "../../escape/me", ["AC/DC .."], cover=True)
    assert report["title"] == "../../escape/me"  # the metadata keep the real title

    [long_author] = [p for p in out.iterdir() if p.name == "Anonymous"]
    [long_folder] = list(long_author.iterdir())
    assert _size(long_folder.name) <= NAME_MAX and long_folder.name.startswith("Ω" * 100)
    report = _check_book(long_folder, None, ["Anonymous"], cover=False)
    assert long_title.startswith(report["title"].rstrip("…"))  # the reader shortens titles

    # nothing outside the output folder, every name one safe component
    outside = [p for p in tmp_path.rglob("*") if out not in p.parents and p != out]
    assert {p.relative_to(tmp_path).parts[0] for p in outside} <= {
        "books",
        "c.png",
        "chunks",
        "library",
    }
    assert [p.name for p in (tmp_path / "library").iterdir()] == ["out"]
    for path in out.rglob("*"):
        assert path.resolve().is_relative_to(out.resolve())
        _check_name(path.name)
    assert sorted(p.name for p in out.iterdir()) == ["AC DC", "Anonymous", "Jane Austen"]
    first = _tree(out)

    # a rerun: every file replaced in place, no temporary or extra file left
    before = {p: os.stat(out / p).st_ino for p in first}
    proc = _convert([books], out, cache_dir, "--subtitles", "srt")
    assert proc.returncode == 0, proc.stderr
    again = _tree(out)
    assert set(again) == set(first)
    assert [p for p in first if os.stat(out / p).st_ino == before[p]] == []  # all new files
    assert not [p for p in out.rglob(".e2a-*")]
    _check_book(austen / "Emma", "Emma", ["Jane Austen"], cover=False)
    _check_book(evil, "../../escape/me", ["AC/DC .."], cover=True)
    # `ebook2audio report OUT` finds the books in their folders
    proc = run_cli("report", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["books"]
    assert len(rows) == 4 and all(r["status"] == "done" for r in rows)
    assert {"Jane Austen/Emma/Emma", "AC DC/escape me/escape me"} <= {r["book"] for r in rows}


def test_cli_split_files_stay_in_the_title_folder(tmp_path, cache_dir):
    """By chapters and by hours every file is in the book's own folder (a folder below it
    would be another book to Audiobookshelf); metadata.json's chapters span the files."""
    book = _html_book(tmp_path / "emma.html", "Emma", "Jane Austen")
    out = tmp_path / "out"
    proc = _convert([book], out / "ch", cache_dir, "--split", "chapters", "--format", "mp3")
    assert proc.returncode == 0, proc.stderr
    folder = out / "ch" / "Jane Austen" / "Emma"
    assert sorted(p.name for p in (out / "ch" / "Jane Austen").iterdir()) == ["Emma"]
    report = load_report(folder / "Emma.report.json")
    files = [Path(o["url"]) for o in report["outputs"]]
    assert [f.name for f in files] == ["01 - Chapter One.mp3", "02 - Chapter Two.mp3"]
    assert all(f.parent == folder and f.stat().st_size > 1000 for f in files)
    assert not [p for p in folder.iterdir() if p.is_dir()]
    meta = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    assert [(c["start"], c["end"]) for c in meta["chapters"]] == [
        (round(c["start_s"], 3), round(c["end_s"], 3)) for c in report["chapters"]
    ]
    proc = _convert([book], out / "h", cache_dir, "--split-hours", "0.001")
    assert proc.returncode == 0, proc.stderr
    folder = out / "h" / "Jane Austen" / "Emma"
    report = load_report(folder / "Emma.report.json")
    n = len(report["outputs"])
    assert n >= 2
    assert [Path(o["url"]) for o in report["outputs"]] == [
        folder / f"Emma - Part {i} of {n}.m4b" for i in range(1, n + 1)
    ]
    assert (folder / "metadata.json").is_file() and (folder / "reader.txt").is_file()


def _full_epub(path: Path, cover: bytes) -> Path:
    """An EPUB 3 book by two authors, with a description and a JPEG cover."""

    def doc(title: str, text: str) -> str:
        return (
            '<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml">'
            f"<head><title>{title}</title></head><body><h1>{title}</h1><p>{text}</p></body></html>"
        )

    package = (
        '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0" '
        'unique-identifier="id"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
        '<dc:identifier id="id">urn:uuid:0b8e3f9a-1c1d-4c55-9d47-5d2b3c1e0a01</dc:identifier>'
        "<dc:title>The Courage to Be Disliked</dc:title>"
        "<dc:creator>Ichiro Kishimi</dc:creator><dc:creator>Fumitake Koga</dc:creator>"
        "<dc:language>en</dc:language>"
        "<dc:description>&lt;p&gt;A dialogue &lt;b&gt;between&lt;/b&gt; a philosopher "
        "and a youth.&lt;/p&gt;</dc:description>"
        '<meta property="dcterms:modified">2024-01-01T00:00:00Z</meta></metadata>'
        '<manifest><item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" '
        'properties="nav"/><item id="c1" href="c1.xhtml" media-type="application/xhtml+xml"/>'
        '<item id="c2" href="c2.xhtml" media-type="application/xhtml+xml"/>'
        '<item id="cover" href="cover.jpg" media-type="image/jpeg" properties="cover-image"/>'
        '</manifest><spine><itemref idref="c1"/><itemref idref="c2"/></spine></package>'
    )
    nav = (
        '<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml" '
        'xmlns:epub="http://www.idpf.org/2007/ops"><head><title>Nav</title></head><body>'
        '<nav epub:type="toc"><ol><li><a href="c1.xhtml">The First Night</a></li>'
        '<li><a href="c2.xhtml">The Second Night</a></li></ol></nav></body></html>'
    )
    return _write_epub(
        path,
        package,
        {
            "OEBPS/nav.xhtml": nav,
            "OEBPS/c1.xhtml": doc("The First Night", "A youth visits a philosopher."),
            "OEBPS/c2.xhtml": doc("The Second Night", "He comes back the next night."),
            "OEBPS/cover.jpg": cover,
        },
    )


def test_cli_an_epub_gives_its_description_and_cover(tmp_path, cache_dir):
    """An EPUB by two authors: the folder names both (`A & B`), its dc:description is
    desc.txt and metadata.json's description, its JPEG cover is cover.jpg unchanged."""
    cover = cover_jpeg(_png(tmp_path / "c.png"), ".png")
    book = _full_epub(tmp_path / "courage.epub", cover)
    out = tmp_path / "out"
    proc = _convert([book], out, cache_dir, "--subtitles", "srt")
    assert proc.returncode == 0, proc.stderr
    folder = out / "Ichiro Kishimi & Fumitake Koga" / "The Courage to Be Disliked"
    report = _check_book(
        folder, "The Courage to Be Disliked", ["Ichiro Kishimi", "Fumitake Koga"], cover=True,
        description="A dialogue between a philosopher and a youth.",
    )  # fmt: skip
    assert [c["title"] for c in report["chapters"]] == ["The First Night", "The Second Night"]
    assert (folder / "cover.jpg").read_bytes() == cover


def test_flat_layout_writes_no_sidecar(tmp_path, cache_dir):
    book = _html_book(tmp_path / "emma.html", "Emma", "Jane Austen")
    proc = _convert([book], tmp_path / "out", cache_dir, "--layout", "flat")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["emma.m4b", "emma.report.json"]


def test_layout_option_cli_api_and_server_whitelist(tmp_path):
    from pydantic import ValidationError

    from ebook2audio_dask.pipeline.options import split_options
    from ebook2audio_dask.serve.app import JobOptions

    assert JobOptions.model_validate({"layout": "audiobookshelf"}).layout == "audiobookshelf"
    with pytest.raises(ValidationError):
        JobOptions.model_validate({"layout": "../elsewhere"})
    options = split_options(str(tmp_path), {"layout": "audiobookshelf"}, caller="job")[0]
    assert options.layout == "audiobookshelf"
    proc = run_cli("convert", "--help")
    assert "--layout" in proc.stdout and "audiobookshelf" in proc.stdout
    proc = run_cli("convert", str(tmp_path), "-o", str(tmp_path / "o"), "--layout", "nested")
    assert proc.returncode == 2 and "nested" in proc.stderr


def test_cli_a_sidecar_that_cannot_be_written_publishes_nothing_of_its_book(tmp_path, cache_dir):
    """metadata.json cannot be published (a folder is in its way): the book fails and none
    of its files is at a final path; the other book of the author is published."""
    books = tmp_path / "books"
    books.mkdir()
    _html_book(books / "emma.html", "Emma", "Jane Austen")
    _html_book(books / "persuasion.html", "Persuasion", "Jane Austen")
    out = tmp_path / "out"
    blocked = out / "Jane Austen" / "Emma" / "metadata.json"
    blocked.mkdir(parents=True)
    (blocked / "keep").write_text("a user's file")
    proc = _convert([books], out, cache_dir, "--subtitles", "srt")
    assert proc.returncode == 1
    assert "emma.html" in proc.stderr and "metadata.json" in proc.stderr
    emma = out / "Jane Austen" / "Emma"
    assert sorted(p.name for p in emma.iterdir()) == ["metadata.json"]
    assert (blocked / "keep").read_text() == "a user's file"
    _check_book(out / "Jane Austen" / "Persuasion", "Persuasion", ["Jane Austen"], cover=False)


def test_server_job_with_layout_audiobookshelf(tmp_path):
    """The API's job option ``layout``: a job's book lands in ``<Author>/<Title>/`` of the
    job's output folder with its sidecar files; the audio downloads by its listed name."""
    from serve_helpers import ServerProcess

    book = _html_book(tmp_path / "emma.html", "Emma", "Jane Austen")
    script = {"Authorization": "Bearer script"}  # what a script sends (the CSRF check)
    with ServerProcess(tmp_path / "data", "--n-workers", "1") as server:
        with server.client(timeout=120) as http:
            http.headers.update(script)
            r = http.post(
                "/api/uploads",
                params={"filename": book.name},
                content=book.read_bytes(),
                headers={"Content-Type": "application/octet-stream"},
            )
            assert r.status_code == 201, r.text
            upload_id = r.json()["id"]
            bad = http.post(
                "/api/jobs", json={"uploads": [upload_id], "options": {"layout": "../up"}}
            )
            assert bad.status_code == 422
            r = http.post(
                "/api/jobs",
                json={
                    "uploads": [upload_id],
                    "options": {"engine": "espeak", "layout": "audiobookshelf"},
                },
            )
            assert r.status_code == 201, r.text
            job_id = r.json()["id"]

            def finished():
                job = http.get(f"/api/jobs/{job_id}").json()
                return job if job["state"] in ("done", "failed", "cancelled") else None

            job = wait_for(finished, 600, "the job to end")  # a hang guard, not a timing
            assert job["state"] == "done", job
            files = {f["kind"]: f for f in job["books"][0]["files"]}
            assert files["audio"]["name"] == "Emma.m4b"
            assert files["report"]["name"] == "Emma.report.json"
            r = http.get(f"/api/jobs/{job_id}/books/0/files/Emma.m4b")
            assert r.status_code == 200 and len(r.content) == files["audio"]["size"]
    [folder] = (tmp_path / "data").rglob("Jane Austen/Emma")
    assert "outputs" in folder.parts
    _check_book(folder, "Emma", ["Jane Austen"], cover=False, subtitles=False)
