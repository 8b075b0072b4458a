"""Issue 14, items 4, 5, 6 and 10: what a user sees when the command line, a
book or a terminal is odd.

* ``--chapters 1-20000000`` stays a range (no 3 GB list) and its error is one
  short line; every error message is one line of bounded length.
* Nothing from a book or a path reaches the terminal raw: control and
  bidi-override characters are escaped in ``inspect``'s table and JSON, in
  warnings and in errors (a hypothesis property over generated titles).
* Ctrl-C (SIGINT to the process group, as a terminal sends it) stops a
  conversion in order: one line saying what is kept, exit 130, no traceback;
  the same command then resumes from the chunk store.
* A FIFO as input, a file as ``-o`` and an unknown URL protocol are usage
  errors (exit 2) found before any cluster starts.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import tracemalloc
import unicodedata
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import load_report, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebook2audio_dask.cli import parse_chapters
from ebook2audio_dask.cli.main import cli
from ebook2audio_dask.errors import BookError, UsageError, one_line, terminal_safe
from ebook2audio_dask.ingest import read_book

EXE = str(Path(sys.executable).with_name("ebook2audio"))
CAROL = "christmas-carol-gutenberg-epub2.epub"

#: What a terminal acts on: C0/C1 controls (a newline only between lines) and bidi controls.
BIDI = set("\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def unsafe_chars(text: str, *, newlines: bool = True) -> list[str]:
    """The characters of *text* a terminal would act on (newlines allowed between lines)."""
    return [
        ch
        for ch in text
        if (unicodedata.category(ch) == "Cc" and not (newlines and ch == "\n")) or ch in BIDI
    ]


def error_lines(stderr: str) -> list[str]:
    """stderr without the dashboard line the CLI prints when a cluster starts and its closing
    count."""
    return [
        line
        for line in stderr.splitlines()
        if line.strip()
        and not line.startswith("dashboard:")
        and not re.fullmatch(r"\d+ of \d+ book\(s\) failed", line)
    ]


# --------------------------------------------------------------------------- item 4: chapter ranges
def test_a_huge_chapter_range_stays_a_range():
    tracemalloc.start()
    try:
        selection = parse_chapters(("1-2000000,7",))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert selection == (range(1, 2000001), 7)
    assert peak < 1_000_000, f"parsing one range took {peak / 1e6:.0f} MB: it was expanded"


def test_a_range_is_checked_against_the_book_in_one_short_line(corpus):
    book = read_book(str(corpus / CAROL))  # 5 chapters
    assert [c.index for c in book.select((range(2, 4), 5)).chapters] == [2, 3, 5]
    assert [c.index for c in book.select(range(1, 6)).chapters] == [1, 2, 3, 4, 5]
    tracemalloc.start()
    try:
        with pytest.raises(UsageError) as err:
            book.select((range(1, 20_000_001),))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(err.value)
    assert "no chapter 6-20000000 (the book has 5)" in message
    assert "\n" not in message and len(message) < 200
    assert peak < 1_000_000
    with pytest.raises(UsageError) as err:  # many holes: the first few, then a count
        book.select((7, 9, 11, 13, 15, 17, 19, range(30, 40)))
    assert "no chapter 7, 9, 11, 13, 15 and 3 more (the book has 5)" in str(err.value)


def test_cli_huge_range_and_huge_title_are_one_line_usage_errors(corpus, tmp_path):
    """Both need the book, so both are found by the chunk stage on the cluster: exit 2, one line
    each."""
    common = ("convert", str(corpus / CAROL), "-o", str(tmp_path / "out"), "--engine", "espeak",
              "--cache", str(tmp_path / "cache"), "--no-progress")  # fmt: skip
    wide = run_cli(*common, "--chapters", "1-20000000")
    assert wide.returncode == 2, wide.stderr
    lines = error_lines(wide.stderr)
    assert len(lines) == 1 and len(lines[0]) < 250, lines
    assert "no chapter 6-20000000 (the book has 5)" in lines[0]

    title = "Stave " + "very long title " * 700  # 11,206 characters, no such chapter
    long = run_cli(*common, "--chapters", title)
    assert long.returncode == 2, long.stderr
    lines = error_lines(long.stderr)
    assert len(lines) == 1, lines
    assert len(lines[0]) <= len(str(corpus / CAROL)) + 2 * 200 + 20, f"{len(lines[0])} characters"
    assert "no chapter titled" in lines[0] and lines[0].endswith("…")


@given(st.text(min_size=0, max_size=3000))
@settings(max_examples=200, derandomize=True, deadline=None)
def test_one_line_is_one_safe_bounded_line(text):
    line = one_line(text)
    assert "\n" not in line and len(line) <= 200
    assert not unsafe_chars(line, newlines=False)
    err = BookError(f"/books/{text[:50]}.epub", text)
    assert "\n" not in str(err) and not unsafe_chars(str(err), newlines=False)


# -------------------------------------------------------------------------- item 5: terminal safety
@given(st.text(min_size=1, max_size=400))
@settings(max_examples=300, derandomize=True, deadline=None)
def test_terminal_safe_escapes_exactly_what_a_terminal_acts_on(text):
    safe = terminal_safe(text)
    assert not unsafe_chars(safe, newlines=False)
    if not unsafe_chars(text, newlines=False):
        assert safe == text  # any script, emoji, accents: unchanged
    for ch in set(unsafe_chars(text, newlines=False)):  # each escaped, visibly
        escaped = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch) or (
            f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"
        )
        assert escaped in safe


#: Titles with what an attacker or a broken book may put there.
hostile_titles = (
    st.lists(
        st.one_of(
            st.sampled_from(
                [
                    "\x1b",
                    "]52;c;",
                    "\x07",
                    "\x9b",
                    "\u202e",
                    "\u2066",
                    "\u200f",
                    "\x00",
                    "\r",
                    "\t",
                    "\x7f",
                    "\x1b[2J",
                    "\\",
                    " ",
                    "é",
                    "ش",
                    "字",
                    "Chapter",
                ]
            ),
            st.characters(codec="utf-8"),
        ),
        min_size=1,
        max_size=60,
    )
    .map("".join)
    .filter(lambda t: t.strip() and "\n" not in t and not t.lstrip().startswith("#"))
)


@given(title=hostile_titles)
@settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_inspect_never_prints_a_raw_control_character(tmp_path, title):
    book = tmp_path / "hostile.md"
    body = "Some words of the chapter, long enough to be read as a paragraph of text. " * 4
    book.write_text(f"# {title}\n\n{body}\n\n# The Second Chapter\n\n{body}\n", encoding="utf-8")
    runner = CliRunner()
    table = runner.invoke(cli, ["inspect", str(book)])
    assert not unsafe_chars(table.output), repr(table.output)
    if table.exit_code == 1:  # mostly control characters: refused as binary, in one line
        assert "not an ebook" in table.output and len(table.output.splitlines()) == 1
        return
    assert table.exit_code == 0, table.output
    as_json = runner.invoke(cli, ["inspect", str(book), "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert not unsafe_chars(as_json.output), repr(as_json.output)
    info = json.loads(as_json.output)  # still valid JSON, titles unchanged in it
    for chapter in info["listing"]:
        t = chapter["title"]
        shown = t if len(t) <= 80 else t[:79] + "…"
        assert terminal_safe(shown) in table.output


def test_escape_sequences_in_titles_warnings_and_paths(tmp_path):
    """The OSC 52 clipboard write in a title, a newline and ESC in an archive member name
    (in a warning) and a newline in a file name (in an error) all come out escaped, on one line."""
    osc52 = "Stave \x1b]52;c;ZWNobyBwd25lZA==\x07 One \u202eevil"
    doc = (
        '<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml"><head>'
        "<title>t</title></head><body><h1>One</h1><p>"
        + "Words of the chapter. " * 20
        + "</p></body></html>"
    )
    nav = (
        '<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml" '
        'xmlns:epub="http://www.idpf.org/2007/ops"><head><title>n</title></head><body><nav '
        'epub:type="toc"><ol><li><a href="a.xhtml">Stave &#x202e;evil \u0085 '
        "One</a></li></ol></nav></body></html>"
    )
    opf = (
        '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" '
        'version="3.0"><metadata '
        'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>T</dc:title>'
        "<dc:language>en</dc:language></metadata><manifest><item "
        'id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/><item '
        'id="a" href="a.xhtml" media-type="application/xhtml+xml"/><item id="gone" '
        'href="gone%0A%1B%5B2J.xhtml" '
        'media-type="application/xhtml+xml"/></manifest><spine><itemref idref="a"/><itemref '
        'idref="gone"/></spine></package>'
    )
    container = (
        '<?xml version="1.0"?><container version="1.0" '
        'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles><rootfile '
        'full-path="OEBPS/content.opf" '
        'media-type="application/oebps-package+xml"/></rootfiles></container>'
    )
    epub = tmp_path / "member.epub"
    with zipfile.ZipFile(epub, "w") as zf:
        zf.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")
        zf.writestr("META-INF/container.xml", container)
        zf.writestr("OEBPS/content.opf", opf)
        zf.writestr("OEBPS/nav.xhtml", nav)
        zf.writestr("OEBPS/a.xhtml", doc)
    proc = subprocess.run([EXE, "inspect", str(epub)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not unsafe_chars(proc.stdout + proc.stderr), repr(proc.stdout + proc.stderr)
    warning = [line for line in proc.stderr.splitlines() if "missing" in line]
    assert len(warning) == 1 and "gone\\n\\x1b[2J.xhtml" in warning[0], proc.stderr
    assert "\\u202eevil" in proc.stdout

    md = tmp_path / "osc.md"
    md.write_text(f"# {osc52}\n\n{'Text of the stave. ' * 20}\n", encoding="utf-8")
    proc = subprocess.run([EXE, "inspect", str(md)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "\x1b" not in proc.stdout and "\x07" not in proc.stdout
    assert "\\x1b]52;c;ZWNobyBwd25lZA==\\x07 One \\u202eevil" in proc.stdout

    odd = tmp_path / "two\nlines\x1b[31m.epub"
    odd.write_bytes(b"PK\x03\x04 this is no zip")
    proc = subprocess.run([EXE, "inspect", str(odd)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and "two\\nlines\\x1b[31m.epub" in lines[0], proc.stderr
    assert not unsafe_chars(proc.stderr)


# --------------------------------------------------------------------------- item 10: checked first
def test_fifo_input_file_output_and_unknown_protocol_are_usage_errors_before_any_cluster(
    tmp_path, corpus
):
    fifo = tmp_path / "book.epub"
    os.mkfifo(fifo)
    book = str(corpus / CAROL)
    out_file = tmp_path / "out.m4b"
    out_file.write_bytes(b"not a folder")
    cases = [
        (["inspect", str(fifo)], "is a named pipe (FIFO), not an ebook file"),
        (
            ["convert", str(fifo), "-o", str(tmp_path / "o")],
            "is a named pipe (FIFO), not an ebook file",
        ),
        (["convert", book, "-o", str(out_file)], "the output must be a folder, and this is a file"),
        (
            ["convert", "nosuch://bucket/book.epub", "-o", str(tmp_path / "o")],
            "Protocol not known: nosuch",
        ),
        (["inspect", "nosuch://bucket/book.epub"], "Protocol not known: nosuch"),
        (["convert", book, "-o", "nosuch://bucket/out"], "Protocol not known: nosuch"),
        (["cache", "info", "--cache", "nosuch://bucket/store"], "Protocol not known: nosuch"),
    ]
    for args, problem in cases:
        # A hang (the FIFO opened) would end at the timeout, failing the test.
        proc = subprocess.run([EXE, *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "dashboard:" not in proc.stderr, f"{args}: a cluster was started first"
        lines = error_lines(proc.stderr)
        assert len(lines) == 1 and problem in lines[0], (args, proc.stderr)
    assert out_file.read_bytes() == b"not a folder"
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- item 6: Ctrl-C
def _stored_chunks(store: Path) -> int:
    return sum(1 for p in store.rglob("*.wav") if not p.name.startswith("."))


@pytest.mark.slow
def test_ctrl_c_says_what_is_kept_exits_130_and_the_same_command_resumes(corpus, tmp_path):
    store, out = tmp_path / "store", tmp_path / "out"
    args = [
        EXE,
        "convert",
        str(corpus / CAROL),
        "-o",
        str(out),
        "--chapters",
        "1",
        "--engine",
        "espeak",
        "--cache",
        str(store),
        "--no-progress",
        "--workers",
        "2",
    ]
    # A session of its own, so that Ctrl-C can be sent to the whole process group as a
    # terminal does: the CLI, its cluster's processes and the ffmpeg they run.
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 540  # a guard against a hang, not a speed limit
        while _stored_chunks(store) < 20:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no chunk stored"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    at_exit = _stored_chunks(store)
    assert proc.returncode == 130, stderr
    for noise in (
        "Traceback",
        "KeyboardInterrupt",
        "AssertionError",
        "Status.init",
        "Exception in",
    ):
        assert noise not in stderr, stderr
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr
    said = re.fullmatch(
        r"interrupted: 1 book\(s\) not finished; (\d+) of their (\d+) chunks are in the chunk "
        r"store: the same command resumes from them",
        lines[0],
    )
    assert said, lines[0]
    kept, total = int(said.group(1)), int(said.group(2))
    assert 20 <= kept <= at_exit and kept < total, (kept, at_exit, total)
    assert not any(out.glob("*.m4b")) and not any(out.glob(".*")), list(out.iterdir())

    again = run_cli(*args[1:])
    assert again.returncode == 0, again.stderr
    totals = load_report(out / "christmas-carol-gutenberg-epub2.report.json")["totals"]
    assert totals["chunks_from_cache"] >= kept


def test_every_package_logger_makes_its_lines_terminal_safe(caplog):
    """Log lines are made safe where they are made, so a worker's warning about a book is
    safe whatever prints it (a worker's own stderr, a log aggregator), not only the CLI's."""
    import importlib
    import logging
    import pkgutil

    import ebook2audio_dask
    from ebook2audio_dask.logs import get_logger

    loggers = {}
    for info in pkgutil.walk_packages(ebook2audio_dask.__path__, "ebook2audio_dask."):
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an optional engine's dependencies are missing here
            continue
        for value in vars(module).values():
            if isinstance(value, logging.Logger) and value.name.startswith("ebook2audio_dask"):
                loggers[value.name] = value
    assert len(loggers) >= 15, sorted(loggers)
    unsafe = sorted(name for name, lg in loggers.items() if not lg.filters)
    assert not unsafe, f"loggers made with logging.getLogger instead of logs.get_logger: {unsafe}"

    log = get_logger("ebook2audio_dask.ingest.epub")
    with caplog.at_level(logging.WARNING, logger="ebook2audio_dask"):
        log.warning("%s: member %s missing", "/books/a\nb.epub", "ch\x1b]52;c;eA==\x07.xhtml")
    [record] = [r for r in caplog.records if "missing" in r.getMessage()]
    assert record.getMessage() == "/books/a\\nb.epub: member ch\\x1b]52;c;eA==\\x07.xhtml missing"
