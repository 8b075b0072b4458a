"""Fuzz test of the ingest layer: mutated real ebooks in, only documented errors out.

Inputs are the real EPUBs, plain text and HTML of the shared corpus,
mutated with hypothesis:

* **structure** (most examples): the EPUB is unzipped in memory, then one to
  four mutations are applied — bytes of one member (bit flips, inserted or
  deleted bytes, truncation, splices of XML-ish fragments such as
  ``<!DOCTYPE``, ``&x;``, ``<![CDATA[``, unclosed tags, NUL bytes, BOMs,
  invalid UTF-8, a huge attribute, deep nesting, re-encoding as UTF-16/32),
  attribute values of the container, package, nav or NCX (hrefs, idrefs,
  ``full-path`` pointing at missing members, ``../`` paths, URLs...),
  deleted / renamed / duplicated / added members, the ``mimetype`` member,
  each member's compression, and header fields of the re-zipped archive
  (flags, method, sizes) — and the members are zipped again, so mutations
  reach the parsers instead of dying at the zip CRC;
* **raw** (a smaller share): bytes of the whole archive;
* **text**: the plain-text and HTML books of the corpus, byte-mutated and
  re-encoded.

For every input :func:`~ebook2audio_dask.ingest.read_book` must return a
sound :class:`~ebook2audio_dask.model.Book` or raise
:class:`~ebook2audio_dask.errors.BookError` with one line starting with the
file's path: no other exception, no hang (an alarm far above any plausible
time), no memory blow-up.  A ``BookError`` made by read_book's
last-resort catch-all ("cannot parse EPUB: IndexError: ...") is a bug
hidden behind a documented type, and fails the test too.

Budgets: ``CI_EXAMPLES`` inputs in all (derandomized: the same inputs on
every run, no example database), or ``E2A_FUZZ_EXAMPLES=20000`` for a long
local run with random inputs.  ``E2A_FUZZ_STATS=<file.json>`` writes the
counts (inputs tried, outcomes); ``E2A_FUZZ_COUNT_ONLY=1`` counts
undocumented errors instead of stopping at the first (benchmarks/bench_fuzz.py);
``E2A_FUZZ_SAVE=<folder>`` keeps a copy of every failing input there.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import os
import re
import resource
import signal
import struct
import tempfile
import threading
import time
import traceback
import warnings
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("hypothesis", reason="hypothesis is part of the dev install")

from helpers import assert_scales_linearly
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from ebook2audio_dask.errors import BookError
from ebook2audio_dask.ingest import FORMATS, MAX_PARAGRAPH_CHARS, read_book
from ebook2audio_dask.model import Book

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"

#: Inputs tried in all on a CI run (the module takes well under a minute).
CI_EXAMPLES = 240
#: Share of the budget per kind of input.
SHARES = {"structure": 0.70, "raw": 0.12, "text": 0.18}
#: Seconds after which an input counts as slow in the statistics (not a failure:
#: no wall-clock limit fails a test on a busy machine), and the alarm that stops
#: a real hang: far above any plausible time (inputs take well under a second idle).
SLOW_S = 5.0
HANG_S = 300.0
#: Peak memory (MiB) the fuzzing may add to the process, all inputs together.
MEMORY_LIMIT_MIB = 1024

if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    # hypothesis caches a few things even without an example database: not in the checkout
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "e2a-hypothesis")

LONG_EXAMPLES = int(os.environ.get("E2A_FUZZ_EXAMPLES", "0") or 0)
COUNT_ONLY = os.environ.get("E2A_FUZZ_COUNT_ONLY", "") not in ("", "0")
STATS_PATH = os.environ.get("E2A_FUZZ_STATS")
SAVE_DIR = os.environ.get("E2A_FUZZ_SAVE")  # failing inputs are copied there

#: Corpus EPUBs used as seeds, smallest first (hypothesis shrinks towards the first).
EPUB_SEEDS = (
    "broken-xhtml-epubsample007.epub",
    "regime-anticancer-arabic.epub",
    "georgia-britannica-pls-ssml.epub",
    "childrens-literature.epub",
    "christmas-carol-gutenberg-epub2.epub",
    "adventures-of-sherlock-holmes-standardebooks.epub",
)
TEXT_SEEDS = ("entre-nous-lectures-francaises.txt", "ontboezemingen-dutch.html")
#: Images, fonts and other members the reader never parses are cut to this
#: many bytes in the seeds (re-zipping a 1.6 MB SVG cover for every input
#: would only slow the fuzzing down).
SEED_BLOB_BYTES = 4096
_PARSED_EXTS = (".xml", ".opf", ".ncx", ".xhtml", ".html", ".htm", "mimetype")
#: Most bytes a "repeat" mutation adds (more only slows the fuzzing down).
REPEAT_BYTES = 300_000


def _budget(kind: str) -> int:
    total = LONG_EXAMPLES or CI_EXAMPLES
    return max(10, round(total * SHARES[kind]))


def _timeout(kind: str) -> int:
    """pytest-timeout seconds for a fuzz test (a long budget takes more than the default)."""
    return max(600, int(_budget(kind) * 1.0))


def _settings(kind: str) -> settings:
    return settings(
        max_examples=_budget(kind),
        derandomize=not LONG_EXAMPLES,  # CI: the same inputs every run
        database=None,  # nothing written into the checkout
        deadline=None,  # no wall-clock limit: a busy machine must not fail it
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


# --------------------------------------------------------------------------- seeds
_SEEDS: dict[str, list[tuple[str, bytes, int]]] = {}


def epub_seed(name: str) -> list[tuple[str, bytes, int]]:
    """Members of corpus EPUB *name*: ``[(name, data, compress_type), ...]``."""
    if name not in _SEEDS:
        members = []
        with zipfile.ZipFile(CORPUS / name) as zf:
            for info in zf.infolist():
                data = zf.read(info)
                if not info.filename.lower().endswith(_PARSED_EXTS):
                    data = data[:SEED_BLOB_BYTES]
                members.append((info.filename, data, info.compress_type))
        _SEEDS[name] = members
    return _SEEDS[name]


_TEXTS: dict[str, bytes] = {}


def text_seed(name: str) -> bytes:
    """The first 48 kB and last 12 kB of a corpus text/HTML book (header, chapters, licence)."""
    if name not in _TEXTS:
        data = (CORPUS / name).read_bytes()
        _TEXTS[name] = data[: 48 * 1024] + data[-12 * 1024 :] if len(data) > 64 * 1024 else data
    return _TEXTS[name]


# --------------------------------------------------------------------------- byte mutations
FRAGMENTS = (
    b"<!DOCTYPE html>", b"<!DOCTYPE x [<!ENTITY e 'boom'>]>",
    b"<!DOCTYPE x SYSTEM 'file:///etc/passwd'>", b"<!DOCTYPE",
    b"<!ENTITY % p SYSTEM 'http://example.invalid/x'>%p;", b"&x;", b"&e;", b"&amp;", b"&nbsp;",
    b"&#0;", b"&#x110000;", b"&#xD800;", b"&#65;", b"&", b"&#", b"<![CDATA[", b"]]>",
    b"<![CDATA[<p>not markup</p>]]>", b"<!--", b"-->", b"<?", b"?>", b"<?xml version='1.0'?>",
    b"<?xml version='1.0' encoding='utf-16'?>", b"<?xml version='1.0' encoding='bogus'?>",
    b"<?xml-stylesheet href='x'?>", b"<", b">", b"</", b"/>", b'"', b"'", b"=", b"<p>", b"</p>",
    b"<p", b"<div>", b"</div>", b"<body>", b"</body>", b"<html>", b"</html>", b"<head>", b"<h1>",
    b"</h1>", b"<h2>Chapter</h2>", b"<h1></h1>", b"<a href='#x'>1</a>", b"<a id='x'/>",
    b"<a name=''>", b"<span epub:type='pagebreak'>", b"<aside epub:type='footnote'>",
    b"<section epub:type='chapter'>", b"<sup>*</sup>", b"<pre>\n\n\n", b"<br/>", b"<table><tr><td>",
    b"</td><td>", b"<svg>", b"<math>", b"<img alt='x'/>", b"<script>", b"<style>",
    b"<nav epub:type='toc'><ol><li><a href='../x'>",
    b"<nav epub:type='landmarks'><a epub:type='bodymatter' href='#'>", b"<li><span>x</span></li>",
    b"<navPoint><navLabel><text>x</text></navLabel><content src='#'/></navPoint>", b"<navMap>",
    b"<item id='x' href='' media-type='application/xhtml+xml'/>", b"<itemref idref='x'/>",
    b"<itemref idref=''/>", b"<spine toc='nope'>", b"<rootfile full-path='' />",
    b"<meta refines='#' property='display-seq'>x</meta>", b"<dc:creator opf:role=''/>",
    b"<dc:title/>", b"<meta name='cover' content=''/>", b" id=''", b" id='x'", b" hidden=''",
    b" xmlns='http://bogus.invalid/'", b" xmlns:epub='", b" xml:lang=''", b" style='display:none'",
    b"\x00", b"\x00\x00\x00\x00", b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf", b"\xff\xfe\x00\x00",
    b"\x80", b"\xc3", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x80\xa8",
    b"\x1b[2J", b"\r", b"\r\n", b"\x0c", b"\x85", b"\xc2\x85",
    b"*** START OF THE PROJECT GUTENBERG EBOOK X ***",
    b"*** END OF THE PROJECT GUTENBERG EBOOK X ***", b"\n\n\nCHAPTER I\n\n", b"\n\n\nIV.\n\n",
    b"\n\n\nPART ONE\n\n", b"[Illustration", b"[Pg 6]", b"_", b"=",
    b"Title: \nAuthor: \nLanguage: \n", b"\n\nPART I\n\n", b"\n\n\nI.\n\n\n", b"_x ",
    b"[Illustration ", b"[Footnote 1: ", b"<h2 id='c'>Chapter</h2><p>Text of it.</p>",
    b"<pre>x\n\n</pre>",
)  # fmt: skip


def _pos(draw, data: bytes) -> int:
    return draw(st.integers(0, len(data)))


def _mutate_bytes(draw, data: bytes, *, markup: bool = True) -> bytes:
    """One byte-level mutation of *data*."""
    op = draw(
        st.sampled_from(
            ("flip", "insert", "delete", "truncate", "fragment", "fragment", "fragment", "repeat",
             "repeat_fragment", "huge_attr", "deep", "long_text", "encode", "replace", "tags")
        )
    )  # fmt: skip
    if op == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        return data[:i] + bytes([data[i] ^ (1 << draw(st.integers(0, 7)))]) + data[i + 1 :]
    if op == "insert":
        i = _pos(draw, data)
        return data[:i] + draw(st.binary(min_size=1, max_size=24)) + data[i:]
    if op == "delete" and data:
        i = draw(st.integers(0, len(data) - 1))
        n = draw(st.sampled_from((1, 2, 7, 64, 1000, len(data))))
        return data[:i] + data[i + n :]
    if op == "truncate":
        return data[: _pos(draw, data)]
    if op == "fragment":
        i = _pos(draw, data)
        return data[:i] + draw(st.sampled_from(FRAGMENTS)) + data[i:]
    if op == "repeat" and data:
        # a piece repeated, up to a few hundred kB: slow (quadratic) code shows up
        i = draw(st.integers(0, len(data) - 1))
        piece = data[i : i + draw(st.sampled_from((1, 16, 200)))]
        times = min(draw(st.sampled_from((2, 50, 2000, 40_000))), REPEAT_BYTES // len(piece))
        return data[:i] + piece * times + data[i:]
    if op == "repeat_fragment":
        i = _pos(draw, data)
        piece = draw(st.sampled_from(FRAGMENTS))
        times = min(draw(st.sampled_from((100, 5000, 40_000))), REPEAT_BYTES // len(piece))
        return data[:i] + piece * times + data[i:]
    if op == "huge_attr":
        starts = [m.end() for m in re.finditer(rb"<[A-Za-z][\w:.-]*", data[:200_000])]
        i = draw(st.sampled_from(starts)) if starts else 0
        size = draw(st.sampled_from((10_000, 300_000, 3_000_000)))
        return data[:i] + b' data-x="' + b"A" * size + b'"' + data[i:]
    if op == "deep" and markup:
        i = _pos(draw, data)
        n = draw(st.sampled_from((100, 3000, 60_000)))
        tag = draw(st.sampled_from((b"div", b"span", b"b", b"ol", b"navPoint")))
        return data[:i] + b"<%s>" % tag * n + b"deep" + data[i:]
    if op == "long_text":
        i = _pos(draw, data)
        word = draw(
            st.sampled_from((b"word ", b"x", b"sentence. ", "\u3002".encode(), b"\xc2\xa0", b"_x "))
        )
        return data[:i] + word * draw(st.sampled_from((1000, 30_000, 100_000))) + data[i:]
    if op == "encode":
        codec = draw(
            st.sampled_from(("utf-16", "utf-16-le", "utf-32", "utf-8-sig", "cp1252", "latin-1"))
        )
        text = data.decode("utf-8", errors=draw(st.sampled_from(("replace", "surrogateescape"))))
        return text.encode(codec, errors="replace" if codec != "utf-8-sig" else "surrogatepass")
    if op == "replace":
        return draw(
            st.sampled_from(
                (b"", b" \n\t ", b"\x00" * 64, b"PK\x03\x04", b"<html/>", b"<?xml version='1.0'?>")
            )
            | st.binary(max_size=256)
        )  # fmt: skip
    if op == "tags" and markup:
        # delete or duplicate one element's start tag (or self-closing element)
        tags = list(re.finditer(rb"<[A-Za-z][^<>]{0,400}>", data[:400_000]))
        if tags:
            m = draw(st.sampled_from(tags))
            if draw(st.booleans()):
                return data[: m.start()] + data[m.end() :]
            return data[: m.end()] + m.group(0) * draw(st.sampled_from((2, 20))) + data[m.end() :]
    return data + b"<"


# --------------------------------------------------------------------------- structure mutations
HOSTILE_VALUES = (
    "", " ", "missing.xhtml", "../missing.xhtml", "../../../../etc/passwd", "/etc/passwd", "/", ".",
    "..", "./", "#", "#nowhere", "x.xhtml#", "?q=1", "%", "%zz", "%2e%2e/%2e%2e/x", "%00", "a%2Fb",
    "http://example.invalid/x.xhtml", "file:///etc/passwd", "data:text/html,<p>x</p>",
    "C:\\x.xhtml", "..\\..\\x", "META-INF/container.xml", "mimetype", "META-INF", "nav.xhtml",
    "toc.ncx", "é.xhtml", "\u202e.xhtml", "x" * 5000, "a/" * 300, "&amp;", "&#0;", "&lt;p&gt;",
    "yes", "no", "nav", "cover-image", "nav cover-image scripted", "application/xhtml+xml",
    "application/x-dtbncx+xml", "image/jpeg", "text/plain", "application/oebps-package+xml", "-1",
    "0", "99999999999999999999", "1e308",
)  # fmt: skip
#: Attributes that steer the reader (preferred when one is picked).
KEY_ATTRS = frozenset(
    [
        "href",
        "src",
        "full-path",
        "idref",
        "id",
        "media-type",
        "properties",
        "toc",
        "linear",
        "epub:type",
        "type",
        "content",
        "name",
        "refines",
        "property",
        "role",
        "uri",
        "algorithm",
    ]
)
_ATTR_RE = re.compile(rb"""([A-Za-z_][\w:.-]*)\s*=\s*(?:"([^"<]*)"|'([^'<]*)')""")


def _pick_member(draw, members: list) -> int:
    """Index of a member, mostly one the reader parses."""
    parsed = [i for i, (n, _, _) in enumerate(members) if n.lower().endswith(_PARSED_EXTS)]
    if parsed and draw(st.integers(0, 9)) < 8:
        return draw(st.sampled_from(parsed))
    return draw(st.integers(0, len(members) - 1))


def _key_member(draw, members: list) -> int | None:
    """Container, package, nav or NCX, when present."""
    keys = [
        i
        for i, (n, d, _) in enumerate(members)
        if n.lower().endswith((".opf", ".ncx", "container.xml"))
        or (n.lower().endswith((".xhtml", ".html")) and b"<nav" in d)
    ]
    return draw(st.sampled_from(keys)) if keys else None


def _escape(value: str) -> bytes:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").encode("utf-8")


def _mutate_attribute(draw, data: bytes, names: list[str]) -> bytes:
    found = list(_ATTR_RE.finditer(data))
    if not found:
        return data
    keyed = [m for m in found if m.group(1).decode("latin-1").lower() in KEY_ATTRS]
    m = draw(st.sampled_from(keyed if keyed and draw(st.integers(0, 4)) else found))
    values = [v.decode("utf-8", "replace") for x in found for v in x.groups()[1:] if v is not None]
    value = draw(
        st.sampled_from(HOSTILE_VALUES)
        | st.sampled_from(names or [""])
        | st.sampled_from(values or [""])
        | st.text(max_size=12)
    )
    group = 2 if m.group(2) is not None else 3
    raw = draw(st.integers(0, 9)) == 0  # now and then unescaped: broken XML
    new = value.encode("utf-8", "surrogatepass") if raw else _escape(value)
    return data[: m.start(group)] + new + data[m.end(group) :]


def _rename(draw, name: str, names: list[str]) -> str:
    kind = draw(st.integers(0, 8))
    if kind == 0:
        return name.upper()
    if kind == 1:
        return "../" + name
    if kind == 2:
        return "/" + name
    if kind == 3:
        return name.replace("/", "\\")
    if kind == 4:
        return name + "/"
    if kind == 5:
        return draw(st.sampled_from(names))
    if kind == 6:
        return name + "\u0301"
    if kind == 7:
        return "OEBPS/" + name.rsplit("/", 1)[-1]
    return name + draw(st.sampled_from((".bak", " ", "#x", "%20")))


_EXTRA_MEMBERS = (
    ("META-INF/encryption.xml",
     b"<encryption xmlns='urn:oasis:names:tc:opendocument:xmlns:container' "
     b"xmlns:enc='http://www.w3.org/2001/04/xmlenc#'><enc:EncryptedData><enc:EncryptionMethod "
     b"Algorithm='http://www.w3.org/2001/04/xmlenc#aes128-cbc'/>"
     b"<enc:CipherData><enc:CipherReference "
     b"URI='%s'/></enc:CipherData></enc:EncryptedData></encryption>"),
    ("META-INF/encryption.xml", b"<encryption><EncryptedData><CipherReference URI='%s'/>"),
    ("META-INF/rights.xml", b"<rights/>"),
    ("EPUB/extra.xhtml",
     b"<html xmlns='http://www.w3.org/1999/xhtml'><body><p>%s</p></body></html>"),
    ("dir/", b""),
    ("META-INF/container.xml",
     b"<container><rootfiles><rootfile full-path='%s' media-type='application/oebps-package+xml'/>"
     b"</rootfiles></container>"),
)  # fmt: skip


def _mutate_structure(draw, members: list) -> None:
    """One structure-level mutation of *members* (``[name, data, compress_type]``), in place."""
    names = [m[0] for m in members]
    op = draw(
        st.sampled_from(
            ("bytes", "bytes", "bytes", "bytes", "attr", "attr", "attr", "attr", "delete", "rename",
             "duplicate", "add", "mimetype", "compression", "reorder")
        )
    )  # fmt: skip
    if op in ("bytes", "attr", "delete", "rename", "duplicate") and not members:
        op = "add"
    if op == "bytes":
        i = _pick_member(draw, members)
        members[i][1] = _mutate_bytes(draw, members[i][1])
    elif op == "attr":
        i = _key_member(draw, members)
        if i is None:
            i = _pick_member(draw, members)
        members[i][1] = _mutate_attribute(draw, members[i][1], names)
    elif op == "delete":
        del members[_pick_member(draw, members)]
    elif op == "rename":
        i = _pick_member(draw, members)
        members[i][0] = _rename(draw, members[i][0], names)
    elif op == "duplicate":
        i = _pick_member(draw, members)
        copy = list(members[i])
        if draw(st.booleans()):
            copy[1] = _mutate_bytes(draw, copy[1])
        members.insert(draw(st.integers(0, len(members))), copy)
    elif op == "add":
        name, template = draw(st.sampled_from(_EXTRA_MEMBERS))
        target = draw(st.sampled_from(names or ["x"]) | st.sampled_from(HOSTILE_VALUES))
        data = template.replace(b"%s", _escape(target)) if b"%s" in template else template
        members.insert(draw(st.integers(0, len(members))), [name, data, zipfile.ZIP_DEFLATED])
    elif op == "mimetype":
        idx = [i for i, m in enumerate(members) if m[0] == "mimetype"]
        choice = draw(st.integers(0, 4))
        if idx and choice == 0:
            del members[idx[0]]
        elif idx and choice == 1:
            members.append(members.pop(idx[0]))  # not first any more
        elif idx and choice == 2:
            members[idx[0]][2] = zipfile.ZIP_DEFLATED
        else:
            value = draw(
                st.sampled_from((b"", b"application/zip", b"application/epub+zip\n", b"text/plain"))
            )
            if idx:
                members[idx[0]][1] = value
            else:
                members.insert(0, ["mimetype", value, zipfile.ZIP_STORED])
    elif op == "compression":
        i = draw(st.integers(0, len(members) - 1)) if members else None
        if i is not None:
            members[i][2] = draw(
                st.sampled_from(
                    (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
                )
            )  # fmt: skip
    elif op == "reorder" and members:
        members.insert(
            draw(st.integers(0, len(members))), members.pop(draw(st.integers(0, len(members) - 1)))
        )


def zip_members(members: list) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name": on purpose
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data, compress_type in members:
                info = zipfile.ZipInfo(name or "unnamed", date_time=(2020, 1, 1, 0, 0, 0))
                info.compress_type = compress_type
                zf.writestr(
                    info, data, compresslevel=1 if compress_type == zipfile.ZIP_DEFLATED else None
                )
    return buf.getvalue()


def _patch_headers(draw, archive: bytes) -> bytes:
    """Change a header field of one member in the local header and/or central directory."""
    central = [m.start() for m in re.finditer(rb"PK\x01\x02", archive)]
    local = [m.start() for m in re.finditer(rb"PK\x03\x04", archive)]
    which = draw(st.sampled_from(("central", "local", "both")))
    n = draw(st.integers(0, max(len(central), len(local), 1) - 1))
    field = draw(st.sampled_from(("flags", "method", "size", "csize", "crc", "name_len", "offset")))
    value = draw(st.sampled_from((0, 1, 8, 0x800, 0x41, 12, 14, 99, 0xFFFF, 0xFFFFFFFF, 2**31)))
    # offsets of (field, struct format) in the central directory and local header
    layout = {
        "flags": ((8, "<H"), (6, "<H")), "method": ((10, "<H"), (8, "<H")),
        "crc": ((16, "<I"), (14, "<I")), "csize": ((20, "<I"), (18, "<I")),
        "size": ((24, "<I"), (22, "<I")), "name_len": ((28, "<H"), (26, "<H")),
        "offset": ((42, "<I"), None),
    }  # fmt: skip
    out = bytearray(archive)
    for side, starts in (("central", central), ("local", local)):
        spec = layout[field][0 if side == "central" else 1]
        if which not in (side, "both") or spec is None or n >= len(starts):
            continue
        off, fmt = spec
        at = starts[n] + off
        if at + struct.calcsize(fmt) <= len(out):
            struct.pack_into(fmt, out, at, value & (0xFFFF if fmt == "<H" else 0xFFFFFFFF))
    return bytes(out)


@st.composite
def mutated_epubs(draw) -> tuple[str, bytes]:
    seed = draw(st.sampled_from(EPUB_SEEDS))
    members = [list(m) for m in epub_seed(seed)]
    for _ in range(draw(st.integers(1, 4))):
        _mutate_structure(draw, members)
    archive = zip_members(members)
    if draw(st.integers(0, 9)) == 0:
        archive = _patch_headers(draw, archive)
    name = draw(
        st.sampled_from(("book.epub",) * 6 + ("book.kepub", "book", "book.zip", "book.txt"))
    )
    return name, archive


@st.composite
def raw_mutated_epubs(draw) -> tuple[str, bytes]:
    seed = draw(st.sampled_from(EPUB_SEEDS[:3]))
    archive = zip_members([list(m) for m in epub_seed(seed)])
    for _ in range(draw(st.integers(1, 6))):
        archive = _mutate_bytes(draw, archive, markup=False)
    return draw(st.sampled_from(("book.epub", "book.epub", "book"))), archive


@st.composite
def mutated_texts(draw) -> tuple[str, bytes]:
    seed = draw(st.sampled_from(TEXT_SEEDS))
    data = text_seed(seed)
    for _ in range(draw(st.integers(1, 4))):
        data = _mutate_bytes(draw, data, markup=seed.endswith(".html"))
    ext = ".html" if seed.endswith(".html") else ".txt"
    name = draw(
        st.sampled_from(
            ("book" + ext,) * 5 + ("book", "book.htm", "book.xhtml", "book.txt", "book.epub")
        )
    )
    return name, data


# --------------------------------------------------------------------------- the check
STATS: dict = {
    "inputs": 0,
    "by_kind": collections.Counter(),
    "books": 0,
    "book_errors": 0,
    "catch_all": collections.Counter(),
    "undocumented": collections.Counter(),
    "hangs": 0,
    "slow": 0,
    "max_seconds": 0.0,
    "problems": collections.Counter(),
    "failures": collections.Counter(),  # what failed the test (or would have), by kind
    "first_failures": [],
}
_CATCH_ALL_RE = re.compile(r"^cannot parse (?:EPUB|HTML|TXT): (\w+): ")
_NUMBERS_RE = re.compile(r"\d[\d.,]*")


class _Hang(BaseException):
    """Raised by the alarm: not an Exception, so read_book's catch-all cannot swallow it."""


@contextlib.contextmanager
def _alarm(seconds: float):
    if threading.current_thread() is not threading.main_thread():  # pragma: no cover
        yield
        return

    def ring(signum, frame):
        raise _Hang(f"no answer after {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, ring)
    # pytest-timeout may have its own alarm running: put it back afterwards
    outer, interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        if outer > 0:
            left = max(outer - (time.monotonic() - start), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, interval)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


#: The process's peak RSS when the fuzzing starts (set by the ``workdir`` fixture).
#: ru_maxrss is a lifetime peak: in a full test run, earlier tests (torch, Dask
#: clusters) may have raised it above anything the fuzzing reaches, and then the
#: growth reads 0; the memory bound is really enforced in a process of its own
#: (``benchmarks/bench_fuzz.py``, or this module run alone).
_BASELINE_MIB = _peak_rss_mib()


def _problem_kind(problem: str, path: str) -> str:
    """A BookError's problem with names and numbers blanked, for counting."""
    text = _NUMBERS_RE.sub("N", problem.replace(path, "<file>"))
    text = re.sub(r"(archive member|spine document|package document|member) \S+", r"\1 X", text)
    text = re.sub(r"\(missing: .*\)", "(missing: ...)", text)
    return text.split(" (")[0][:90]


def _where(exc: BaseException) -> str:
    """Where *exc* was raised: the innermost frame, and the innermost one of ours."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "ebook2audio_dask" in f.filename]
    out = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in frames[-1:]]
    if ours and ours[-1] is not frames[-1]:
        out.append(f"from {Path(ours[-1].filename).name}:{ours[-1].lineno} {ours[-1].name}")
    return " ".join(out)


_CURRENT: dict = {}  # the input being checked (for SAVE_DIR)


def _fail(kind: str, message: str) -> None:
    STATS["failures"][kind] += 1
    if SAVE_DIR and _CURRENT.get("path") is not None:
        n = sum(STATS["failures"].values())
        target = Path(SAVE_DIR) / f"{n:04d}-{kind}-{_CURRENT['path'].name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_CURRENT["data"])
        message += f" [input saved as {target}]"
    if len(STATS["first_failures"]) < 20:
        STATS["first_failures"].append(f"{kind}: {message[:700]}")
    if not COUNT_ONLY:
        pytest.fail(message, pytrace=False)


def check_input(path: Path, data: bytes, kind: str, include_matter: bool) -> None:
    """read_book on *data* (written to *path*): a sound Book, or a one-line BookError naming it."""
    path.write_bytes(data)
    _CURRENT.update(path=path, data=data)
    source = str(path)
    STATS["inputs"] += 1
    STATS["by_kind"][kind] += 1
    start = time.perf_counter()
    try:
        with _alarm(HANG_S), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            book = read_book(source, include_matter=include_matter)
    except _Hang as exc:
        STATS["hangs"] += 1
        _fail("hang", f"{kind}: {exc}")
        return
    except BookError as exc:
        STATS["book_errors"] += 1
        message = str(exc)
        m = _CATCH_ALL_RE.match(exc.problem)
        cause = exc.__cause__
        if m and cause is not None and type(cause).__name__ == m.group(1):
            STATS["catch_all"][type(cause).__name__] += 1
            _fail(
                "catch-all",
                f"{kind}: read_book's last-resort catch-all hid a raw error: {message} "
                f"(raised at {_where(cause)})",
            )
        STATS["problems"][_problem_kind(exc.problem, source)] += 1
        if "\n" in message or "\r" in message or not message.startswith(source + ": "):
            _fail("message", f"{kind}: not one line naming the file: {message!r}")
        if exc.source != source or not exc.problem.strip():
            _fail("message", f"{kind}: bad BookError fields: {exc.source!r}, {exc.problem!r}")
        book = None
    except Exception as exc:  # noqa: BLE001 - exactly what the fuzzing looks for
        STATS["undocumented"][type(exc).__name__] += 1
        _fail(
            "undocumented",
            f"{kind}: undocumented {type(exc).__name__} escaped read_book: {exc!r}"[:2000]
            + f" (raised at {_where(exc)})",
        )
        return
    finally:
        elapsed = time.perf_counter() - start
        STATS["max_seconds"] = max(STATS["max_seconds"], round(elapsed, 3))
        if elapsed > SLOW_S:
            STATS["slow"] += 1
        grown = _peak_rss_mib() - _BASELINE_MIB
        if grown > MEMORY_LIMIT_MIB:
            _fail("memory", f"{kind}: peak memory grew by {grown:.0f} MiB while fuzzing")
    if book is not None:
        STATS["books"] += 1
        _check_book(book, source, kind)


def _check_book(book: Book, source: str, kind: str) -> None:
    problems = []
    if not isinstance(book, Book) or book.source != source or book.format not in FORMATS:
        problems.append(f"not a Book of {source}: {book!r:.200}")
    if not book.chapters:
        problems.append("no chapters")
    if not isinstance(book.title, str) or not all(isinstance(a, str) for a in book.authors):
        problems.append(f"title/authors not str: {book.title!r:.100} {book.authors!r:.100}")
    if [c.index for c in book.chapters] != list(range(1, len(book.chapters) + 1)):
        problems.append(f"chapters not numbered 1..N: {[c.index for c in book.chapters][:20]}")
    for c in book.chapters:
        if not isinstance(c.title, str):
            problems.append(f"chapter {c.index}: title {c.title!r:.100}")
        for p in c.paragraphs:
            if not isinstance(p, str) or not p.strip():
                problems.append(f"chapter {c.index}: empty or non-str paragraph {p!r:.100}")
            elif len(p) > MAX_PARAGRAPH_CHARS:
                problems.append(f"chapter {c.index}: paragraph of {len(p)} chars")
        try:
            (c.title + "".join(c.paragraphs)).encode("utf-8")
        except UnicodeEncodeError as exc:
            problems.append(f"chapter {c.index}: text is not valid Unicode ({exc})")
    if book.cover is not None and not (
        isinstance(book.cover.data, bytes)
        and book.cover.data
        and book.cover.media_type.startswith("image/")
    ):
        problems.append(f"bad cover: {book.cover!r:.200}")
    if problems:
        _fail("book", f"{kind}: unsound Book: " + "; ".join(problems[:5]))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder for the inputs; the counts are written out when the module is done."""
    global _BASELINE_MIB
    _BASELINE_MIB = _peak_rss_mib()
    logger = __import__("logging").getLogger("ebook2audio_dask")
    level = logger.level
    logger.setLevel("ERROR")  # thousands of warnings about damaged books are expected
    yield tmp_path_factory.mktemp("fuzz")
    logger.setLevel(level)
    if STATS_PATH:
        out = dict(STATS)
        for key, value in out.items():
            if isinstance(value, collections.Counter):
                out[key] = dict(value.most_common(30))
        out["budget"] = LONG_EXAMPLES or CI_EXAMPLES
        out["peak_rss_growth_mib"] = round(_peak_rss_mib() - _BASELINE_MIB, 1)
        Path(STATS_PATH).write_text(json.dumps(out, indent=2, ensure_ascii=False))


@pytest.mark.timeout(_timeout("structure"))
@_settings("structure")
@given(mutated_epubs(), st.booleans())
def test_fuzz_epub_structure(workdir, case, include_matter):
    name, data = case
    check_input(workdir / name, data, "structure", include_matter)


@pytest.mark.timeout(_timeout("raw"))
@_settings("raw")
@given(raw_mutated_epubs(), st.booleans())
def test_fuzz_epub_raw_bytes(workdir, case, include_matter):
    name, data = case
    check_input(workdir / name, data, "raw", include_matter)


@pytest.mark.timeout(_timeout("text"))
@_settings("text")
@given(mutated_texts(), st.booleans())
def test_fuzz_text_and_html(workdir, case, include_matter):
    name, data = case
    check_input(workdir / name, data, "text", include_matter)


def test_seeds_read_as_books(workdir):
    """The unmutated seeds are real books the reader reads (so mutations start from a book)."""
    for seed in EPUB_SEEDS:
        check_input(
            workdir / "seed.epub", zip_members([list(m) for m in epub_seed(seed)]), "seed", False
        )
    for seed in TEXT_SEEDS:
        check_input(workdir / ("seed" + Path(seed).suffix), text_seed(seed), "seed", False)


# --------------------------------------------------------------------------- regressions
def _edited(seed: str, edits: dict[str, tuple[bytes, ...]]) -> bytes:
    """Corpus EPUB *seed* with, in each member named in *edits*, ``old`` replaced
    by ``new`` (once) for each ``old, new`` pair given."""
    members = [list(m) for m in epub_seed(seed)]
    for m in members:
        pairs = edits.get(m[0], ())
        for old, new in zip(pairs[::2], pairs[1::2], strict=True):
            assert old in m[1], (m[0], old)
            m[1] = m[1].replace(old, new, 1)
    return zip_members(members)


ARABIC = "regime-anticancer-arabic.epub"
NAV = "EPUB/Navigation/nav.xhtml"
NCX = "EPUB/Navigation/toc.ncx"
OPF = "EPUB/package.opf"
NO_NAV_TOC = (b'epub:type="toc"', b'epub:type="x"')  # so that the NCX is read

#: Inputs like those the fuzzing found failing, each read as a Book now.
REGRESSIONS = {
    # ValueError("no path specified") from posixpath.relpath, through the
    # last-resort catch-all: a TOC link to a place in the TOC document itself
    "nav-link-to-own-fragment": (
        ARABIC, {NAV: (b'href="../Content/B_titlepage.xhtml"', b'href="#toc"')},
    ),
    "ncx-link-to-own-fragment": (
        ARABIC,
        {NAV: NO_NAV_TOC, NCX: (b'src="../Content/B_titlepage.xhtml"', b'src="#navpoint2"')},
    ),
    "landmark-to-own-fragment": (
        ARABIC, {NAV: (b'epub:type="bodymatter" href="../Content/C_content.xhtml"',
                       b'epub:type="bodymatter" href="#guide"')},
    ),
    # "/EPUB/x.xhtml": relative to the root of the archive (was resolved
    # against the current directory when made relative to the OPF folder)
    "href-from-archive-root": (
        ARABIC, {NAV: (b'href="../Content/C_content.xhtml">Commencer',
                       b'href="/EPUB/Content/C_content.xhtml">Commencer')},
    ),
    # ValueError("All strings must be XML compatible") from lxml, through the
    # catch-all: BeautifulSoup passed the junk encoding a damaged document
    # declares to lxml's HTML parser
    "junk-declared-encoding": (
        ARABIC, {NAV: (b'<?xml version="1.0" encoding="UTF-8"?>',
                       b'<?xml version="1.0" encoding="\x17\xff\xfe\x00v"?>')},
    ),
    "junk-meta-charset": (
        ARABIC, {NAV: (b'<?xml version="1.0" encoding="UTF-8"?>', b"",
                       b'<meta charset="utf-8" />', b'<meta charset="u\x00tf" /><p>&</p>')},
    ),
    # UnicodeDecodeError from lxml, through the catch-all: a character reference
    # to a surrogate, kept by the recovering parse of a package document
    "surrogate-char-ref-in-package": (
        ARABIC, {OPF: (b'<dc:creator id="creator1">Pr David Khayat',
                       b'<dc:creator id="&#xD800;">Pr David &#55296;Khayat')},
    ),
    "surrogate-char-ref-in-content": (
        ARABIC, {NAV: (b"<title>Navigation</title>", b"<title>Nav&#xDC00;igation</title><p>&</p>")},
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(REGRESSIONS))
def test_regressions_found_by_fuzzing(workdir, name):
    seed, edits = REGRESSIONS[name]
    path = workdir / f"{name}.epub"
    path.write_bytes(_edited(seed, edits))
    book = read_book(str(path))
    reference = read_book(str(CORPUS / seed))
    assert [c.paragraphs for c in book.chapters] == [c.paragraphs for c in reference.chapters]
    assert all(not c.source.startswith(("/", "..")) for c in book.chapters), [
        c.source for c in book.chapters
    ]
    assert book.title == reference.title
    assert len(book.authors) == len(reference.authors)


#: Paragraph patterns that once took time quadratic in their length in the
#: plain-text reader (100 kB of "_x " took 33 s; 1 MB would take an hour; 1 MB of
#: placeholders or part headings took 20-40 s).
SLOW_TEXTS = {
    "unclosed-italics": "_x ",  # a lazy _(.+?)_ regex retried from every "_"
    "unclosed-italics-double": "__x ",
    "unclosed-placeholders": "[Illustration ",  # \[Illustration[^\]]*\] from every "["
    "numbered-headings": "\nI.\n\n\n",  # every chapter run weighed against every heading
    "part-headings": "\n\n\nPART I\n\n\n\nCHAPTER I\n\nText.\n",  # parts x chapters
}


@pytest.mark.parametrize("name", list(SLOW_TEXTS))
def test_pathological_text_is_read_in_linear_time(workdir, name):
    piece = SLOW_TEXTS[name]

    def make(size: int):
        path = workdir / f"{name}-{size}.txt"
        path.write_text(
            "Title: X\n\n\n\nCHAPTER I\n\nSome words.\n\n" + piece * (size // len(piece))
        )

        def read():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                book = read_book(str(path))
            assert book.chapters

        return read

    assert_scales_linearly(make, 250_000)  # 250 kB and 1 MB


def _deep_html(workdir: Path, spans: int, lines: int) -> Path:
    body = "".join(f"line {i}<br>" for i in range(lines))
    path = workdir / f"deep-{spans}.html"
    path.write_text(
        "<html><head><title>Deep</title></head><body><h1>One</h1><p>First chapter text.</p>"
        "<h1>Two</h1>" + "<span>" * spans + body + "</body></html>"
    )
    return path


def test_deep_html_is_read_in_linear_time_and_keeps_its_text(workdir):
    """60,000 unclosed <span> then 6,000 lines (a hang the fuzzing found: 27 s
    for 700 kB, quadratic in BeautifulSoup's tree builder); elements deeper
    than MAX_DEPTH are dropped, their text kept."""

    def make(size: int):
        path = _deep_html(workdir, size, size // 10)
        return lambda: read_book(str(path), include_matter=True)

    assert_scales_linearly(make, 30_000)  # 30,000 and 120,000 spans
    book = read_book(str(_deep_html(workdir, 60_000, 6000)), include_matter=True)
    text = " ".join(p for c in book.chapters for p in c.paragraphs)
    assert "First chapter text." in text and "line 0 " in text and "line 5999" in text


@pytest.mark.parametrize(
    "body, paragraphs",
    [
        ("Hello <span>world</span>", ["Hello world"]),
        ("<p>First.</p>Text after the last block.", ["First.", "Text after the last block."]),
    ],
)
def test_text_right_in_body_is_kept(workdir, body, paragraphs):
    """Text in <body> outside any block element was dropped (found while
    looking at a fuzzing hang: a document whose tags were all too deep)."""
    from ebook2audio_dask.ingest._xhtml import read_document

    doc, _ = read_document(
        f'<html xmlns="http://www.w3.org/1999/xhtml"><body>{body}</body></html>'.encode()
    )
    assert [b.text for b in doc.blocks] == paragraphs
