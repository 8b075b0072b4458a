"""Write docs/images/readalong.png: a page of a read-along EPUB with one sentence highlighted.

    .venv/bin/python docs/gen_readalong_screenshot.py            # rewrite docs/images/readalong.png
    .venv/bin/python docs/gen_readalong_screenshot.py --out x.png --sentence 7

Needs Debian's headless Chromium and its driver (packages ``chromium`` and
``chromium-driver``, installed by ``.ci/install-dev.sh``) and selenium (dev
install); no engine, no cluster.

The read-along EPUB is built as a conversion builds it, with made-up timings:
the French text book of the shared corpus (``entre-nous-lectures-francaises.txt``)
becomes a plain EPUB 3 (:func:`~ebook2audio_dask.readalong.generate.generate_epub`),
its chapter 2 is planned sentence by sentence, each sentence given one second
of a silent AAC file, and :func:`~ebook2audio_dask.readalong.write_readalong`
wraps the sentences and writes the overlays.  The chapter's content document,
unpacked from that EPUB with the stylesheet the EPUB carries, is opened in
headless Chromium; the class the package names in ``media:active-class`` is put
on one sentence (all its fragments), as a reading system does while that
sentence's clip plays, so the highlight is the EPUB's own CSS rule.  A small
stylesheet of page margins and a serif font stands in for a reader's defaults.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from lxml import etree

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
BOOK = CORPUS / "entre-nous-lectures-francaises.txt"
OUT = ROOT / "docs" / "images" / "readalong.png"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: Plan chapter (body chapter, as ``--chapters`` counts) shown.
CHAPTER = 2
#: Stands in for a reading system's own page style (not part of the EPUB).
READER_CSS = (
    "html { background: #fbf8f1; } "
    "body { max-width: 34em; margin: 1.5em auto; padding: 0 1.5em; font-family: 'DejaVu Serif',"
    " Georgia, serif; font-size: 19px; line-height: 1.55; color: #222; } "
    "h1 { font-size: 1.5em; text-align: center; margin: 0.5em 0 1em; } "
    "p { margin: 0 0 0.6em; text-indent: 1.2em; }"
)


def build_readalong(folder: Path) -> Path:
    """The read-along EPUB of the French book's chapter *CHAPTER*, 1 s per sentence."""
    from ebook2audio_dask.audio.ffmpeg import ffmpeg_exe
    from ebook2audio_dask.engines.base import EngineSpec
    from ebook2audio_dask.ingest import read_book
    from ebook2audio_dask.readalong import (
        AudioFile,
        ChapterText,
        TimedSentence,
        generate_epub,
        spoken_sentences,
        write_readalong,
    )
    from ebook2audio_dask.text.chunk import plan_book

    full = read_book(str(BOOK), include_matter=True)
    generated = folder / "generated.epub"
    sources = generate_epub(full, str(generated))
    body = [s for c, s in zip(full.chapters, sources) if c.kind == "body"]
    book = read_book(str(BOOK)).select([CHAPTER])
    plan = plan_book(book, EngineSpec.make("espeak", "fr"), sample_rate=22050, max_chars=200,
                     language="fr", sentences=True)  # fmt: skip
    spoken = spoken_sentences(plan)
    timed = [TimedSentence(s, 0, float(n), float(n + 1)) for n, s in enumerate(spoken)]
    audio = folder / "book.m4a"
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=22050:cl=mono",
         "-t", str(len(spoken)), "-c:a", "aac", "-b:a", "32k", "-y", str(audio)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    target = folder / "readalong.epub"
    write_readalong(
        str(generated),
        [ChapterText(ch.index, body[ch.index - 1]) for ch in plan.chapters],
        timed,
        [AudioFile(str(audio), "audio/mp4", float(len(spoken)), "book.m4a")],
        str(target),
        language="fr",
    )
    return target


def overlaid_document(epub: Path, folder: Path) -> tuple[Path, str]:
    """Unpack *epub* into *folder*; return its first document with an overlay and the
    package's ``media:active-class``."""
    with zipfile.ZipFile(epub) as archive:
        archive.extractall(folder)
        container = etree.fromstring(archive.read("META-INF/container.xml"))
        opf_path = container.find(".//{*}rootfile").get("full-path")
        opf = etree.fromstring(archive.read(opf_path))
    active = next(
        (m.text or "").strip()
        for m in opf.iter("{*}meta")
        if m.get("property") == "media:active-class"
    )
    item = next(i for i in opf.iter("{*}item") if i.get("media-overlay"))
    return (folder / opf_path).parent / item.get("href"), active


def screenshot(document: Path, active: str, sentence: int, out: Path) -> None:
    """Render *document* in headless Chromium with *active* on its *sentence*-th sentence."""
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        sys.exit(f"Chromium cannot run here: {', '.join(missing)} missing "
                 "(Debian packages chromium and chromium-driver)")  # fmt: skip
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=820,720", "--hide-scrollbars", "--lang=fr-FR"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        driver.get(document.as_uri())
        found = driver.execute_script(
            """
            const [css, active, n] = arguments;
            const ns = 'http://www.w3.org/1999/xhtml';
            const style = document.createElementNS(ns, 'style');
            style.textContent = css;
            document.head.insertBefore(style, document.head.firstChild);
            const spans = [...document.querySelectorAll('span.e2a-s')];
            // a sentence's first span has its id; its other fragments have that id + '-2'...
            const heads = spans.filter(
                s => !spans.some(o => o !== s && s.id.startsWith(o.id + '-')));
            const head = heads[n - 1];
            if (!head) return null;
            for (const s of spans) {
                if (s === head || s.id.startsWith(head.id + '-')) s.classList.add(active);
            }
            head.scrollIntoView({block: 'nearest'});
            const links = [...document.querySelectorAll('link[rel=stylesheet]')];
            return {text: head.textContent, sheets: links.map(l => l.sheet !== null),
                    background: getComputedStyle(head).backgroundColor};
            """,
            READER_CSS,
            active,
            sentence,
        )
        if found is None:
            sys.exit(f"{document}: no sentence {sentence}")
        if not all(found["sheets"]) or found["background"] in ("rgba(0, 0, 0, 0)", "transparent"):
            sys.exit(f"{document}: the EPUB's stylesheet did not highlight {active!r}: {found}")
        png = driver.get_screenshot_as_png()
    finally:
        driver.quit()
    image = Image.open(io.BytesIO(png)).convert("RGB")
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, optimize=True)
    print(f"{out}: {image.width}x{image.height}, {out.stat().st_size // 1024} kB; "
          f"highlighted: {found['text']!r}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"PNG to write (default {OUT})")
    parser.add_argument("--sentence", type=int, default=9, help="which sentence (1-based)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="e2a-readalong-shot-") as tmp:
        epub = build_readalong(Path(tmp))
        document, active = overlaid_document(epub, Path(tmp) / "unpacked")
        screenshot(document, active, args.sentence, args.out)


if __name__ == "__main__":
    main()
