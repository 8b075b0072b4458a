"""Read-along EPUBs end to end: real books converted on a real cluster, read back independently.

Each book is converted with ``readalong=True`` (espeak: fast) and its
``<stem>.readalong.epub`` is then checked without the project's own code:

* Debian's ``epubcheck`` reports no error and no Media Overlays warning;
* the package, the SMIL files and the documents are read with lxml: every
  sentence the plan speaks has exactly one ``<par>``, whose text target holds
  that sentence; the clips of each audio file are contiguous, in order, and
  inside the file;
* where each clip begins, the speech in the decoded audio begins (within
  50 ms), measured against the chunk WAVs of the chunk store;
* the documents, with the sentence wrappers (and the one stylesheet link)
  removed, equal the book's own (canonical XML; text for the EPUB 2 book);
* the first and last clip are cut out of the EPUB's audio with ffmpeg and hold
  speech of their length.
"""

from __future__ import annotations

import itertools
import posixpath
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import CORPUS
from helpers import ROOT, epubcheck, load_report, run_cli
from lxml import etree

import ebook2audio_dask as e2a
from ebook2audio_dask.audio import decode_to_pcm, ffmpeg_exe

RATE = 22050  # espeak's
OPF = "{http://www.idpf.org/2007/opf}"
SMIL = "{http://www.w3.org/ns/SMIL}"
XHTML = "{http://www.w3.org/1999/xhtml}"


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("chunks"))


def convert(client, store, book: Path, out: Path, **kwargs) -> dict:
    [result] = e2a.convert(
        str(book), str(out), engine="espeak", client=client, cache=store, readalong=True, **kwargs
    )
    assert result.ok, result.error
    report = load_report(out / f"{book.stem}.report.json")
    assert report == result.report
    return report


# --------------------------------------------------------------------------- an independent reader
def parse(data: bytes) -> etree._Element:
    return etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))


def clock(value: str) -> float:
    """A SMIL clock value in seconds ("12.5s", "1:02.5", "0:01:02.500", "150ms")."""
    value = value.strip()
    if value.endswith("ms"):
        return float(value[:-2]) / 1000
    if value.endswith("s") and ":" not in value:
        return float(value[:-1])
    if value.endswith("min"):
        return float(value[:-3]) * 60
    if value.endswith("h"):
        return float(value[:-1]) * 3600
    seconds = 0.0
    for field in value.split(":"):
        seconds = seconds * 60 + float(field)
    return seconds


class ReadAlong:
    """A read-along EPUB read with lxml and zipfile only."""

    def __init__(self, path: Path):
        self.zip = zipfile.ZipFile(path)
        container = parse(self.zip.read("META-INF/container.xml"))
        self.opf_path = container.find(".//{*}rootfile").get("full-path")
        self.opf = parse(self.zip.read(self.opf_path))
        base = posixpath.dirname(self.opf_path)
        self.items = {
            i.get("id"): i for i in self.opf.iter(f"{OPF}item")
        }  # fmt: skip
        self.href = {k: posixpath.normpath(posixpath.join(base, i.get("href")))
                     for k, i in self.items.items()}  # fmt: skip
        self.spine = [r.get("idref") for r in self.opf.iter(f"{OPF}itemref")]

    def meta(self, prop: str, refines: str | None = None) -> list[str]:
        return [
            m.text
            for m in self.opf.iter(f"{OPF}meta")
            if m.get("property") == prop and m.get("refines") == refines
        ]

    def overlays(self) -> list[tuple[str, str, etree._Element]]:
        """(document path, smil id, smil root) of every spine document with an overlay."""
        out = []
        for idref in self.spine:
            mo = self.items[idref].get("media-overlay")
            if mo:
                out.append((self.href[idref], mo, parse(self.zip.read(self.href[mo]))))
        return out

    def pars(self) -> list[dict]:
        """Every par in reading order: its document, element id, text, audio member, clip."""
        out = []
        for doc_path, smil_id, smil in self.overlays():
            smil_dir = posixpath.dirname(self.href[smil_id])
            doc = parse(self.zip.read(doc_path))
            ids = {e.get("id"): e for e in doc.iter() if e.get("id")}
            for par in smil.iter(f"{SMIL}par"):
                text = par.find(f"{SMIL}text").get("src")
                audio = par.find(f"{SMIL}audio")
                target, _, fragment = text.partition("#")
                assert posixpath.normpath(posixpath.join(smil_dir, target)) == doc_path
                element = ids[fragment]  # the target exists in its document
                out.append({
                    "doc": doc_path,
                    "id": fragment,
                    "text": " ".join("".join(element.itertext()).split()),
                    "audio": posixpath.normpath(posixpath.join(smil_dir, audio.get("src"))),
                    "begin": clock(audio.get("clipBegin")),
                    "end": clock(audio.get("clipEnd")),
                })  # fmt: skip
        return out

    def extract(self, member: str, folder: Path) -> Path:
        path = folder / posixpath.basename(member)
        with self.zip.open(member) as src, open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
        return path


def unwrap(data: bytes) -> etree._Element:
    """A document with the read-along wrappers and stylesheet link removed."""
    root = parse(data)
    for link in list(root.iter(f"{XHTML}link")):
        if (link.get("href") or "").endswith("e2a/readalong.css"):
            parent = link.getparent()
            prev = link.getprevious()
            if prev is not None:
                prev.tail = (prev.tail or "") + (link.tail or "")
            else:
                parent.text = (parent.text or "") + (link.tail or "")
            parent.remove(link)
    spans = [s for s in root.iter(f"{XHTML}span") if "e2a-s" in (s.get("class") or "").split()]
    for span in spans:
        span.tag = "e2a-unwrap"
    etree.strip_tags(root, "e2a-unwrap")
    return root


def squash(text: str) -> str:
    return "".join(ch for ch in text.casefold() if ch.isalnum())


def is_subsequence(small: str, big: str) -> bool:
    letters = iter(big)
    return all(ch in letters for ch in small)


# --------------------------------------------------------------------------- the checks
def check_readalong(epub: Path, report: dict, original: Path | None, tmp_path: Path,
                    *, store: str, xml_equal: bool = True) -> ReadAlong:  # fmt: skip
    book = ReadAlong(epub)
    messages = epubcheck(epub)
    errors = [m for m in messages if m["severity"] in ("ERROR", "FATAL")]
    overlay_warnings = [m for m in messages if m["ID"].startswith("MED")]
    assert not errors, errors[:5]
    assert not overlay_warnings, overlay_warnings[:5]
    stats = report["readalong"]
    assert stats["url"] == str(epub)
    assert stats["unmatched"] == 0 and stats["overlaid"] == stats["sentences"] > 0, stats

    # every spoken sentence has exactly one par, whose target holds that sentence
    pars = book.pars()
    sentences = plan_sentences(report, store)
    assert len(pars) == len(sentences)
    ids = [(p["doc"], p["id"]) for p in pars]
    assert len(set(ids)) == len(ids)
    for par, (_, text, _) in zip(pars, sentences):
        # the target holds the sentence, and little else (a page number the book prints there)
        want, got = squash(text), squash(par["text"])
        assert want and is_subsequence(want, got) and len(got) <= len(want) + 12, (par, text)

    # contiguous clips inside each audio file; media:duration per overlay and in total
    durations = {o["url"]: o["duration_s"] for o in report["outputs"]}
    by_audio: dict[str, list[dict]] = {}
    for p in pars:
        by_audio.setdefault(p["audio"], []).append(p)
    assert len(by_audio) == len(report["outputs"])
    for clips, output in zip(by_audio.values(), report["outputs"]):
        assert clips[0]["begin"] == pytest.approx(0, abs=0.002)
        for a, b in itertools.pairwise(clips):
            assert a["end"] == pytest.approx(b["begin"], abs=0.0015) and a["end"] > a["begin"]
        assert clips[-1]["end"] == pytest.approx(durations[output["url"]], abs=0.002)
    total = 0.0
    for _, smil_id, smil in book.overlays():
        clips = [
            clock(a.get("clipEnd")) - clock(a.get("clipBegin")) for a in smil.iter(f"{SMIL}audio")
        ]
        [value] = book.meta("media:duration", f"#{smil_id}")
        assert clock(value) == pytest.approx(sum(clips), abs=0.01)
        total += clock(value)
    [value] = book.meta("media:duration")
    assert clock(value) == pytest.approx(total, abs=0.01)
    assert book.meta("media:active-class")

    # the speech starts where each clip begins: in the decoded audio, the first sound after
    # clipBegin is where the sentence's chunk (its WAV in the chunk store) has its first sound
    from ebook2audio_dask.audio.wav import decode_wav
    from ebook2audio_dask.storage import ChunkStore

    wavs = ChunkStore.make(store).read_many("espeak", list({key for _, _, key in sentences}))
    lead = {}
    for key, wav in wavs.items():
        samples = np.abs(decode_wav(wav)[0].astype(np.float64))
        lead[key] = int(np.argmax(samples > 1000)) / RATE
    pars_of = iter(pars)
    for member, clips in by_audio.items():
        audio = decode_to_pcm(str(book.extract(member, tmp_path)), RATE).astype(np.float64)
        for clip in clips:
            _, _, key = sentences[pars.index(next(pars_of))]
            lo = max(0, int((clip["begin"] - 0.05) * RATE))
            window = np.abs(audio[lo : int(clip["end"] * RATE)])
            loud = np.flatnonzero(window > 1000)
            assert len(loud), clip
            onset = (lo + loud[0]) / RATE - clip["begin"]
            assert abs(onset - lead[key]) < 0.05, (clip["text"][:40], onset, lead[key])

    # nothing else in the documents changed
    if original is not None:
        with zipfile.ZipFile(original) as src:
            for doc in sorted({p["doc"] for p in pars}):
                # an EPUB 2 book's *.htm(l) documents are renamed *.xhtml in EPUB 3
                stem = doc.removesuffix(".xhtml")
                was = next(n for n in (doc, stem + ".html", stem + ".htm") if n in src.namelist())
                before, after = parse(src.read(was)), unwrap(book.zip.read(doc))
                if xml_equal:
                    assert etree.tostring(before, method="c14n") == etree.tostring(
                        after, method="c14n"
                    ), doc
                else:
                    body = f"{XHTML}body"
                    assert "".join(before.find(".//{*}body").itertext()) == "".join(
                        after.find(body).itertext()
                    ), doc

    # an independent player: the first and last clip cut out with ffmpeg hold speech
    for clip in (pars[0], pars[-1]):
        audio_path = book.extract(clip["audio"], tmp_path)
        pcm = subprocess.run(
            [ffmpeg_exe(), "-v", "error", "-ss", f"{clip['begin']:.3f}", "-to",
             f"{clip['end']:.3f}", "-i", str(audio_path), "-f", "s16le", "-ac", "1", "-ar",
             str(RATE), "-"],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
        samples = np.frombuffer(pcm, "<i2").astype(np.float64)
        assert len(samples) / RATE == pytest.approx(clip["end"] - clip["begin"], abs=0.06)
        assert np.sqrt(np.mean(samples**2)) > 300, clip
    return book


def plan_sentences(report: dict, store: str) -> list[tuple[int, str, str]]:
    """(chapter, text, chunk key) of each sentence the conversion spoke: the plan made again
    from the source with the same options (independent of the EPUB writer)."""
    from ebook2audio_dask.ingest import read_book
    from ebook2audio_dask.pipeline.tasks import PlanRequest, plan_task
    from ebook2audio_dask.text.chunk import sentence_ends

    chapters = tuple(c["index"] for c in report["chapters"])
    plan = plan_task(
        read_book(report["input"]),
        PlanRequest(chapters=chapters, engine="espeak", sentences=True, sentence_chunks=True),
    )
    out = []
    for chunk in plan.chunks:
        text = " ".join((chunk.display or chunk.text).split())
        ends = sentence_ends(text, plan.language)
        for a, b in zip((0, *ends), ends):
            if text[a:b].strip():
                out.append((chunk.chapter, text[a:b].strip(), chunk.key))
    return out


# --------------------------------------------------------------------------- the books
def test_epub3_book_readalong(client, store, tmp_path):
    """The EPUB 3 sample (one document, chapters on anchors): chapters 2-3 overlaid, the rest
    of the book kept as text; M4B audio (AAC in MP4) inside."""
    source = ROOT / "examples" / "childrens-literature.epub"
    report = convert(client, store, source, tmp_path, chapters=[2, 3])
    epub = tmp_path / "childrens-literature.readalong.epub"
    book = check_readalong(epub, report, source, tmp_path, store=store)
    audio = [i for i in book.items.values() if i.get("media-type", "").startswith("audio/")]
    assert [i.get("media-type") for i in audio] == ["audio/mp4"]
    with zipfile.ZipFile(source) as src:
        assert set(src.namelist()) <= set(book.zip.namelist())  # nothing of the book is lost
    # a rerun finds every chunk and the encoded audio in the store: the audio is only remuxed,
    # and the read-along EPUB is written again around it, the same
    again = convert(client, store, source, tmp_path / "again", chapters=[2, 3])
    assert again["totals"]["audio_reused"] and again["totals"]["chunks_synthesized"] == 0
    assert {k: v for k, v in again["readalong"].items() if k != "url"} == {
        k: v for k, v in report["readalong"].items() if k != "url"
    }
    rerun = ReadAlong(tmp_path / "again" / epub.name)
    assert [(p["id"], p["begin"], p["end"]) for p in rerun.pars()] == [
        (p["id"], p["begin"], p["end"]) for p in book.pars()
    ]


def test_epub2_book_becomes_epub3_with_overlays(client, store, tmp_path):
    """The Gutenberg EPUB 2 (Stave Five spans two of its files) as EPUB 3 with overlays; MP3."""
    source = CORPUS / "christmas-carol-gutenberg-epub2.epub"
    report = convert(client, store, source, tmp_path, chapters=[5], format="mp3")
    epub = tmp_path / f"{source.stem}.readalong.epub"
    book = check_readalong(epub, report, source, tmp_path, store=store, xml_equal=False)
    assert book.opf.get("version") == "3.0"
    assert len({p["doc"] for p in book.pars()}) >= 2


def test_text_book_gets_a_generated_epub3(client, store, tmp_path):
    """The French plain-text book: a generated EPUB 3 (title, chapters, matter as text)."""
    source = CORPUS / "entre-nous-lectures-francaises.txt"
    report = convert(client, store, source, tmp_path, chapters=[2, 3])
    epub = tmp_path / f"{source.stem}.readalong.epub"
    book = check_readalong(epub, report, None, tmp_path, store=store)
    assert book.meta("dcterms:modified")
    [lang] = [e.text for e in book.opf.iter("{http://purl.org/dc/elements/1.1/}language")]
    assert lang.startswith("fr")
    # every chapter of the book is there as text, overlaid or not
    documents = [book.href[i] for i in book.spine]
    assert len(documents) > len({p["doc"] for p in book.pars()})


def test_fb2_book_split_by_chapters(client, store, tmp_path):
    """An FB2 book, one M4B per chapter: one audio file per chapter inside the EPUB."""
    from test_formats import write_fb2

    from ebook2audio_dask.ingest import read_book

    carol = read_book(str(CORPUS / "christmas-carol-gutenberg-epub2.epub"))
    source = tmp_path / "carol.fb2"
    write_fb2(carol, source, keep=6)
    out = tmp_path / "out"
    report = convert(client, store, source, out, chapters=[1, 2], split="chapters")
    epub = out / "carol.readalong.epub"
    book = check_readalong(epub, report, None, tmp_path, store=store)
    assert len({p["audio"] for p in book.pars()}) == 2


def test_readalong_needs_mp3_or_aac(tmp_path):
    """--readalong with audio EPUB readers cannot play: one line, exit 2, nothing written."""
    proc = run_cli(
        "convert", str(ROOT / "examples" / "childrens-literature.epub"), "-o", str(tmp_path),
        "--readalong", "--format", "opus", "--engine", "espeak",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "--readalong needs --format m4b or mp3" in proc.stderr
    assert "Traceback" not in proc.stderr and not list(tmp_path.iterdir())
