"""The ``ebook2audio`` command line, run as a real subprocess."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from helpers import check_m4b_against_report, load_report, run_cli


def _inspect(path: Path, *extra: str) -> dict:
    proc = run_cli("inspect", str(path), "--json", *extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_inspect_christmas_carol_lists_its_five_staves(corpus):
    info = _inspect(corpus / "christmas-carol-gutenberg-epub2.epub")
    assert info["title"].startswith("A Christmas Carol")
    assert info["authors"] == ["Charles Dickens"] and info["language"] == "en"
    assert info["cover"] == "image/jpeg"
    titles = [c["title"] for c in info["chapters"]]
    assert len(titles) == 5
    for title, word in zip(titles, ["ONE", "TWO", "THREE", "FOUR", "FIVE"]):
        assert title.startswith(f"STAVE {word}.")
    assert all(c["words"] > 2000 for c in info["chapters"])
    # front/back matter appears only when asked for, and is marked as such
    full = _inspect(corpus / "christmas-carol-gutenberg-epub2.epub", "--include-matter")
    kinds = [c["kind"] for c in full["chapters"]]
    assert kinds.count("body") == 5 and len(kinds) > 5
    assert [c["title"] for c in full["chapters"] if c["kind"] == "body"] == titles


def test_inspect_childrens_literature_has_15_stories_from_one_file(corpus):
    info = _inspect(corpus / "childrens-literature.epub")
    titles = [c["title"] for c in info["chapters"]]
    assert len(titles) == 15
    assert titles[0].endswith("A FOUR-LEAVED CLOVER") and titles[-1].startswith(
        "204 THE KING OF THE GOLDEN RIVER"
    )
    assert {c["index"] for c in info["chapters"]} == set(range(1, 16))


def test_inspect_sherlock_holmes_has_12_stories(corpus):
    info = _inspect(corpus / "adventures-of-sherlock-holmes-standardebooks.epub")
    titles = [c["title"] for c in info["chapters"]]
    assert len(titles) == 12
    assert (
        titles[0] == "A Scandal in Bohemia" and titles[-1] == "The Adventure of the Copper Beeches"
    )
    assert info["language"] == "en-GB" and info["cover"] == "image/svg+xml"


def test_inspect_french_text_has_40_chapters_and_a_table(corpus):
    info = _inspect(corpus / "entre-nous-lectures-francaises.txt")
    assert len(info["chapters"]) == 40 and info["language"] == "fr"
    table = run_cli("inspect", str(corpus / "entre-nous-lectures-francaises.txt"))
    assert table.returncode == 0
    assert "Chapters: 40" in table.stdout and " 40. " in table.stdout


def _zip(path: Path, files: dict[str, str | bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


CONTAINER = (
    '<?xml version="1.0"?><container version="1.0" '
    'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
    '<rootfile full-path="OPS/book.opf" media-type="application/oebps-package+xml"/>'
    "</rootfiles></container>"
)


def _epub_missing_cover(path: Path) -> Path:
    opf = """<?xml version="1.0" encoding="utf-8"?>
<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">
 <metadata xmlns:dc="http://purl.org/dc/elements/1.1/">
  <dc:identifier id="id">x</dc:identifier><dc:title>Coverless</dc:title>
  <dc:creator>A. Writer</dc:creator><dc:language>en</dc:language>
 </metadata>
 <manifest>
  <item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>
  <item id="c1" href="c1.xhtml" media-type="application/xhtml+xml"/>
  <item id="cover" href="images/cover.jpg" media-type="image/jpeg" properties="cover-image"/>
 </manifest>
 <spine><itemref idref="c1"/></spine>
</package>"""
    nav = """<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml"
 xmlns:epub="http://www.idpf.org/2007/ops"><body><nav epub:type="toc"><ol>
 <li><a href="c1.xhtml#one">The First</a></li><li><a href="c1.xhtml#two">The Second</a></li>
 </ol></nav></body></html>"""
    c1 = """<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml"><body>
 <h2 id="one">The First</h2><p>A short first chapter that has a cover it cannot find.</p>
 <img src="images/missing.png" alt="A picture that is not there"/>
 <h2 id="two">The Second</h2><p>And a second one, just as short, to end the book.</p>
 </body></html>"""
    return _zip(
        path,
        {
            "mimetype": "application/epub+zip",
            "META-INF/container.xml": CONTAINER,
            "OPS/book.opf": opf,
            "OPS/nav.xhtml": nav,
            "OPS/c1.xhtml": c1,
        },
    )


@pytest.mark.slow
def test_bad_inputs_fail_one_line_each_and_the_rest_finish(corpus, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "not-an-ebook.epub").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(500))
    good_bytes = (corpus / "childrens-literature.epub").read_bytes()
    (bad / "truncated.epub").write_bytes(good_bytes[: len(good_bytes) // 3])
    _zip(bad / "no-container.epub", {"mimetype": "application/epub+zip", "OPS/a.xhtml": "<html/>"})
    (bad / "empty.txt").write_text("\ufeff\r\n   \r\n", encoding="utf-8")
    _epub_missing_cover(bad / "coverless.epub")
    inputs = [str(p) for p in sorted(bad.iterdir())] + [
        str(corpus / "broken-xhtml-epubsample007.epub"),
        str(bad / "does-not-exist.epub"),
    ]
    out = tmp_path / "out"
    proc = run_cli(
        "convert",
        *inputs,
        "-o",
        str(out),
        "--engine",
        "espeak",
        "--cache",
        str(tmp_path / "c"),
        "--no-progress",
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    failed = {"not-an-ebook", "truncated", "no-container", "empty", "does-not-exist"}
    for stem in failed:
        [line] = [e for e in errors if f"{stem}." in e]
        assert line.startswith(f"error: {bad / stem}"), line
        assert not (out / f"{stem}.m4b").exists() and not (out / f"{stem}.report.json").exists()
    assert "5 of 7 book(s) failed" in proc.stderr
    assert "container.xml" in next(e for e in errors if "no-container" in e)
    # the book whose cover is missing still converts (without a cover) ...
    report = load_report(out / "coverless.report.json")
    assert [c["title"] for c in report["chapters"]] == ["The First", "The Second"]
    check_m4b_against_report(out / "coverless.m4b", report, expect_cover=False)
    # ... and so does the chapter file that is not well-formed XML (recovered)
    assert (out / "broken-xhtml-epubsample007.m4b").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_usage_errors_exit_2(corpus, tmp_path):
    book = str(corpus / "entre-nous-lectures-francaises.txt")
    for args in (
        ["convert", book, "-o", str(tmp_path), "--chapters", "3-1", "--no-progress"],
        ["convert", book, "-o", str(tmp_path), "--engine", "nope", "--no-progress"],
        ["convert", book, "--no-progress"],  # no -o
        ["frobnicate"],
    ):
        proc = run_cli(*args)
        assert proc.returncode == 2, (args, proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr
    proc = run_cli("convert", book, "-o", str(tmp_path), "--chapters", "99", "--no-progress")
    assert proc.returncode == 2 and "no chapter 99" in proc.stderr


def test_debug_shows_the_traceback(tmp_path):
    bad = tmp_path / "x.epub"
    bad.write_bytes(b"nope")
    plain = run_cli("inspect", str(bad))
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert plain.stderr.strip() == f"error: {bad}: not a valid EPUB: not a zip archive"
    debug = run_cli("inspect", str(bad), "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_help_documents_exit_codes_and_options():
    proc = run_cli("--help")
    assert proc.returncode == 0 and "Exit codes" in proc.stdout
    proc = run_cli("convert", "--help")
    for option in (
        "--engine",
        "--voice",
        "--language",
        "--chapters",
        "--workers",
        "--scheduler",
        "--cache",
        "--debug",
    ):
        assert option in proc.stdout


def test_engines_lists_installed_engines_and_a_plugin_from_an_entry_point(tmp_path):
    # a third-party engine registered the way any package would: an entry point in its dist-info
    pkg = tmp_path / "site"
    (pkg / "fake_tts_plugin-1.0.dist-info").mkdir(parents=True)
    (pkg / "fake_tts_plugin-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake-tts-plugin\nVersion: 1.0\n"
    )
    (pkg / "fake_tts_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[ebook2audio_dask.engines]\nbroken = fake_tts_plugin_missing_module:Engine\n"
    )
    proc = run_cli("engines", "--json", env={"PYTHONPATH": str(pkg)})
    assert proc.returncode == 0, proc.stderr
    infos = {i["name"]: i for i in json.loads(proc.stdout)}
    assert infos["piper"]["available"] and infos["espeak"]["available"]
    assert {"id": "en_US-joe-medium", "language": "en-US"} in infos["piper"]["voices"]
    assert {"fr", "nl", "ar"} <= set(infos["espeak"]["languages"])
    assert infos["piper"]["sample_rate"] == 22050
    # the plugin is discovered; it cannot import, and that is said, not fatal
    assert infos["broken"]["available"] is False and "cannot import" in infos["broken"]["why"]
    table = run_cli("engines")
    assert table.returncode == 0 and "piper: available" in table.stdout


def test_library_batch_priority_streamed_results_and_summary(tmp_path, cache_dir):
    """Several books in one graph: each is reported as it finishes, --priority goes first,
    a broken book fails alone, and a summary table ends the run."""
    books = tmp_path / "library"
    books.mkdir()
    for name in ("alpha", "bravo", "charlie"):
        paras = "".join(
            f"<p>{name.title()} paragraph {i}: some words to speak here, slowly.</p>"
            for i in range(12)
        )
        (books / f"{name}.html").write_text(
            f"<html lang='en'><body><h1>{name.title()}</h1>{paras}</body></html>"
        )
    (books / "broken.epub").write_bytes(b"not a zip at all")
    # Piper (not espeak, too fast for tasks to queue) on one worker: priorities alone decide what
    # runs next
    proc = run_cli(
        "convert",
        str(books),
        "-o",
        str(tmp_path / "out"),
        "--priority",
        "charlie.html",
        "--workers",
        "1",
        "--batch-chars",
        "300",
        "--cache",
        cache_dir,
        "--no-progress",
    )
    assert proc.returncode == 1, proc.stderr
    done = [line for line in proc.stdout.splitlines() if line.startswith("done: ")]
    assert len(done) == 3 and "charlie.m4b" in done[0]  # the priority book finished first
    assert "broken.epub: not a valid EPUB" in proc.stderr and "1 of 4 book(s) failed" in proc.stderr
    table = proc.stdout[proc.stdout.index("book  ") :].splitlines()
    assert table[0].split()[:5] == ["book", "status", "chapters", "audio", "wall"]
    rows = {line.split()[0]: line.split()[1] for line in table[1:]}
    assert rows == {
        "alpha.html": "done",
        "bravo.html": "done",
        "broken.epub": "FAILED",
        "charlie.html": "done",
    }
    for name in ("alpha", "bravo", "charlie"):
        assert (tmp_path / "out" / f"{name}.m4b").is_file()
    assert not (tmp_path / "out" / "broken.m4b").exists()


def test_book_priorities_order():
    from ebook2audio_dask.pipeline.api import book_priorities

    books = ["/l/a.epub", "/l/b.txt", "s3://x/c.epub", "/l/d.html"]
    ranks = book_priorities(books, ["c.epub", "/l/d.*"])
    assert sorted(books, key=ranks.get, reverse=True) == [
        "s3://x/c.epub",
        "/l/d.html",
        "/l/a.epub",
        "/l/b.txt",
    ]
    assert all(
        abs(a - b) >= 100 for a, b in zip(sorted(ranks.values()), sorted(ranks.values())[1:])
    )
    assert list(book_priorities(books).values()) == [400, 300, 200, 100]
