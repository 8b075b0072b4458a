"""Plain text in memory (issue 14, item 7).

A 300 MB ``.txt`` used to reach 6.3 GB: the reader held the file's bytes, the
decoded text, a list of its lines and every paragraph's lines at once (about
nine times the file's size before the book was even built).  It now decodes
the file block by block and keeps, per paragraph, its text and three
integers, so reading costs about the book's own text; planning adds the
chunks.  Plain text also has its own size limit, ``ingest.max-text-size``,
checked before the text is read.

The books are generated: Gutenberg-style prose (a header, ``CHAPTER IV.``
headings, paragraphs wrapped at 70 columns) from the corpus's French reader,
whose curly apostrophes and dashes make Python keep most paragraphs at two
bytes a character, as a real modern text does.  Memory is Python's own
allocations (``tracemalloc``) while a book is read: the *marginal* cost of a
byte, from a book of n and one of 4n bytes, so fixed costs (one read block,
caches) do not count.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

import dask
import pytest
from helpers import roman, run_cli, traced_peak, wrap
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebook2audio_dask.engines.base import EngineSpec
from ebook2audio_dask.errors import BookError
from ebook2audio_dask.ingest import read_book
from ebook2audio_dask.ingest._text import decode_text, decoded_text, fallback_encoding
from ebook2audio_dask.ingest.txt import read_txt, read_txt_blocks
from ebook2audio_dask.text.chunk import plan_book
from ebook2audio_dask.text.segment import split_sentences

MIB = 1024 * 1024
SPEC = EngineSpec.make("espeak", "fr")


def generated_text(corpus: Path, size: int, chapter_bytes: int = 100_000) -> str:
    """A Gutenberg-style book of about *size* UTF-8 bytes made of the corpus reader's prose."""
    text = (corpus / "entre-nous-lectures-francaises.txt").read_text(encoding="utf-8-sig")
    body = text.split("*** START OF")[1].split("\n", 1)[1]
    body = body.split("End of the Project Gutenberg")[0]
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", body)]
    paragraphs = [wrap(p) + "\n\n" for p in paragraphs if len(p) > 60 and "Produced by" not in p]
    out = ["Title: Generated\nAuthor: Bench\nLanguage: French\n\n"
           "*** START OF THE PROJECT GUTENBERG EBOOK GENERATED ***\n\n"]  # fmt: skip
    total, chapter, k = len(out[0]), 0, 0
    while total < size:
        chapter += 1
        out.append(f"\n\n\n\nCHAPTER {roman(chapter)}.\n\n")
        in_chapter = 0
        while in_chapter < chapter_bytes and total < size:
            para = paragraphs[k % len(paragraphs)]
            k += 1
            out.append(para)
            in_chapter += len(para.encode())
            total += len(para.encode())
    return "".join(out)


def _marginal(corpus: Path, tmp_path: Path, sizes: tuple[int, int], work) -> float:
    """Peak traced bytes per extra byte of book, between books of *sizes* bytes."""
    peaks, lengths = [], []
    for size in sizes:
        path = tmp_path / f"book-{size}.txt"
        path.write_text(generated_text(corpus, size), encoding="utf-8")
        lengths.append(path.stat().st_size)
        _, peak = traced_peak(lambda path=path: work(str(path)))
        peaks.append(peak)
    return (peaks[1] - peaks[0]) / (lengths[1] - lengths[0])


def test_reading_a_text_costs_about_its_own_text(corpus, tmp_path):
    """Before: ~9 bytes per byte of file (bytes, text, lines and paragraphs at once)."""
    read_book(str(corpus / "entre-nous-lectures-francaises.txt"))  # imports, caches
    per_byte = _marginal(corpus, tmp_path, (1 * MIB, 4 * MIB), read_book)
    # the book itself is ~2.1 bytes per byte here (most paragraphs are 2 bytes a character)
    assert per_byte <= 3.0, per_byte


def test_reading_and_planning_a_text_stays_within_a_few_times_its_size(corpus, tmp_path):
    """The book and its plan (chunks: spoken text, keys): ~4 bytes per byte; before: ~9."""

    def read_and_plan(path: str):
        book = read_book(path)
        return plan_book(book, SPEC, sample_rate=22050, max_chars=600, language="fr")

    read_and_plan(str(corpus / "entre-nous-lectures-francaises.txt"))  # pySBD, regex caches
    per_byte = _marginal(corpus, tmp_path, (MIB // 2, 2 * MIB), read_and_plan)
    assert per_byte <= 5.0, per_byte


def _sparse_text(path: Path, size: int) -> Path:
    """A text file of *size* bytes: real text first, then a hole (never stored, reads as NULs)."""
    with open(path, "wb") as fh:
        fh.write(("Des mots, encore des mots. " * 4000).encode())  # 108 kB: past the sniffed head
        fh.truncate(size)
    return path


def test_a_text_over_the_default_limit_is_refused_before_it_is_read(tmp_path):
    limit = 64 * MIB  # ingest.max-text-size's default (ebook2audio.yaml)
    path = _sparse_text(tmp_path / "huge.txt", limit + 1)

    def refused() -> BookError:
        with pytest.raises(BookError) as info:
            read_book(str(path))
        return info.value

    error, peak = traced_peak(refused)
    assert str(error) == (
        f"{path}: file is 64.00 MiB, over the limit ingest.max-text-size (64.00 MiB)"
    )
    assert peak < 2 * MIB  # the 64 kB head only: its text was never read

    result = run_cli("inspect", str(path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {error}"]


def test_the_text_limit_is_configurable_and_the_file_limit_still_applies(corpus, tmp_path):
    path = tmp_path / "book.txt"
    text = generated_text(corpus, 3 * MIB // 2)
    path.write_text(text, encoding="utf-8")
    with dask.config.set({"ebook2audio.ingest.max-text-size": "1MiB"}):
        with pytest.raises(BookError, match=r"over the limit ingest\.max-text-size \(1\.00 MiB\)$"):
            read_book(str(path))
    with dask.config.set({"ebook2audio.ingest.max-text-size": "2MiB"}):
        assert len(read_book(str(path)).chapters) == text.count("\nCHAPTER ") == 16
        with dask.config.set({"ebook2audio.ingest.max-file-size": "1MiB"}):
            with pytest.raises(BookError, match=r"limit ingest\.max-file-size \(1\.00 MiB\)$"):
                read_book(str(path))
    result = run_cli(
        "inspect", str(path), "--json", env={"DASK_EBOOK2AUDIO__INGEST__MAX_TEXT_SIZE": "1MiB"}
    )
    assert result.returncode == 1 and "ingest.max-text-size (1.00 MiB)" in result.stderr


# --------------------------------------------------------------------------
# Decoding block by block gives what decoding the whole file gives
# --------------------------------------------------------------------------
_LINES = st.sampled_from([
    "", "   ", "CHAPTER IV.", "Chapter 2: L’école", "II. Papa se fâche.", "I.",
    "Title: Le Livre", "Author: Lucie Vos", "Language: French",
    "*** START OF THE PROJECT GUTENBERG EBOOK X ***", "Produced by Someone",
    "*** END OF THE PROJECT GUTENBERG EBOOK X ***",
    "Il était une fois -- dit-il -- un « roi » très âgé.", "Ça coûte 12 € ; voilà.",
    "[Illustration: un chat]", "_Italiques_ et =gras=.", "   1. Le début ..... 3",
    "日本語の文。", "مرحبا بالعالم", "\ufeffBOM inside", "tab\there", "PRÉFACE.",
])  # fmt: skip
_ENDS = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def _texts(draw) -> str:
    lines = draw(st.lists(st.tuples(_LINES, _ENDS), max_size=60))
    bom = draw(st.sampled_from(["", "\ufeff", "\ufeff\ufeff"]))
    return bom + "".join(line + end for line, end in lines) + draw(_LINES)


def _in_blocks(data: bytes, size: int):
    return lambda: (data[i : i + size] for i in range(0, len(data), size))


def _sections(content) -> list:
    return [(s.title, s.source, s.hint, [(b.text, b.level) for b in s.blocks])
            for s in content.sections]  # fmt: skip


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(text=_texts(), codec=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-32"]),
       block=st.integers(1, 64))  # fmt: skip
def test_a_text_read_block_by_block_is_the_text_read_whole(text, codec, block):
    """Blocks cut characters, CR LF pairs and BOMs anywhere: the book is the same."""
    data = text.encode(codec)
    whole = read_txt(decode_text(data), "book.txt")
    pieces = read_txt_blocks(_in_blocks(data, block), "book.txt")
    assert _sections(pieces) == _sections(whole)
    assert (pieces.title, pieces.authors, pieces.language) == (
        whole.title,
        whole.authors,
        whole.language,
    )


def _stream_decode(data: bytes, block: int) -> str | None:
    """Decode as :func:`read_txt_blocks` does; None for binary data."""
    blocks = _in_blocks(data, block)
    try:
        try:
            return "".join(decoded_text(blocks(), "x.txt"))
        except UnicodeDecodeError:
            return "".join(decoded_text(blocks(), "x.txt", fallback_encoding(blocks(), "x.txt")))
    except BookError as exc:
        assert exc.problem == "not an ebook (unrecognised content)"
        return None


_BYTES = st.lists(
    st.one_of(
        st.sampled_from(["Le café", " était ", "très chaud. ", "\n", "\r\n", "日本", "“déjà”"]).map(
            str.encode
        ),
        st.sampled_from(
            [
                b"\xff",
                b"\xc3(",
                b"\xe9",
                b"\x81",
                b"\x9d",
                b"\x00",
                b"\x01\x02\x03",
                b"\xef\xbf\xbd",
                b"\xe2\x80",
                codecs.BOM_UTF8,
            ]
        ),
        st.binary(max_size=8),
    ),
    max_size=120,
).map(b"".join)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(data=_BYTES, wide=st.sampled_from([None, "utf-16", "utf-32"]), block=st.integers(1, 300))
def test_decoding_block_by_block_follows_the_whole_file_rules(data, wide, block):
    """UTF-8, damaged UTF-8, cp1252, Latin-1, UTF-16/32 and binary: as ``decode_text`` says."""
    if wide:
        data = data.decode("latin-1").encode(wide)
    whole = decode_text(data)
    streamed = _stream_decode(data, block)
    if whole is None:
        assert streamed is None
    else:
        assert streamed is not None
        assert streamed.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff") == (
            whole.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
        )


# --------------------------------------------------------------------------
# Sentence splitting
# --------------------------------------------------------------------------
def test_sentence_splitting_makes_no_pattern_per_sentence(monkeypatch):
    """pySBD's ``segment`` found each sentence back with a regex of its own: one new
    pattern per sentence, which evicted pySBD's rules from ``re``'s cache (most of
    the planning time).  The patterns compiled no longer grow with the sentences."""
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "eta",
        "theta",
        "iota",
        "kappa",
        "lambda",
        "mu",
    ]

    def paragraph(n: int) -> str:
        return " ".join(
            f"{words[i % 12].capitalize()} {words[(i * 7) % 12]} {words[(i * 5) % 12]} {i}."
            for i in range(n)
        )

    compile_ = re._compile
    patterns = {}
    for n in (50, 200):
        seen = set()

        def spy(pattern, flags, seen=seen):
            seen.add((pattern, flags))
            return compile_(pattern, flags)

        monkeypatch.setattr(re, "_compile", spy)
        sentences = split_sentences(paragraph(n), "en")
        monkeypatch.setattr(re, "_compile", compile_)
        assert len(sentences) == n
        patterns[n] = len(seen)
    assert patterns[200] <= patterns[50] + 5, patterns
