"""The documentation builds with Sphinx, warnings as errors, and holds what it should.

The site is built once per test module, exactly as docs/conf.py says to build
it by hand (``python -m sphinx -W --keep-going -b html docs OUT``), into a
temporary folder.  Then the pages generated from the code are checked: the
CLI reference (sphinx-click) has a section for every command of the click
group, the API reference (autodoc) holds ``convert``'s docstring, and the
benchmark pages include a figure row of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import html
import inspect
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

import ebook2audio_dask as e2a
from ebook2audio_dask.cli.main import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs") / "html"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", str(DOCS), str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, (
        f"sphinx failed (exit {proc.returncode}): {' '.join(cmd)}\n"
        f"--- stdout ---\n{proc.stdout[-20000:]}\n--- stderr ---\n{proc.stderr[-20000:]}"
    )
    return out


def page(site: Path, name: str) -> str:
    path = site / name
    built = sorted(str(p.relative_to(site)) for p in site.rglob("*.html"))
    assert path.is_file(), f"{name} was not built; pages: {built}"
    return path.read_text(encoding="utf-8")


def text_of(markup: str) -> str:
    """Visible text of an HTML fragment, whitespace collapsed, typographic quotes made plain."""
    text = html.unescape(re.sub(r"<[^>]+>", " ", markup))
    plain = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'}
    text = text.translate(str.maketrans(plain))
    return " ".join(text.split())


def headings(markup: str) -> set[str]:
    """Text of every h1-h6 of a page (without the '#' permalink)."""
    found = set()
    for _, inner in re.findall(r"<h([1-6])[^>]*>(.*?)</h\1>", markup, flags=re.DOTALL):
        found.add(text_of(inner).rstrip("#").strip())
    return found


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths of every command and subcommand of *group*: ("convert",), ("cache", "info")..."""
    out = []
    for name, command in group.commands.items():
        out.append(prefix + (name,))
        if isinstance(command, click.Group):
            out.extend(commands(command, prefix + (name,)))
    return out


def test_sphinx_builds_without_warnings(site):
    for name in (
        "index.html",
        "quickstart.html",
        "concepts.html",
        "deployment/index.html",
        "deployment/fixed.html",
        "deployment/slurm.html",
        "troubleshooting.html",
        "cli.html",
        "api.html",
        "metrics.html",
        "benchmarks/results.html",
        "benchmarks/method.html",
    ):
        page(site, name)


def test_cli_reference_covers_every_command(site):
    """sphinx-click rendered a section, with its usage line and help, for every command."""
    markup = page(site, "cli.html")
    text = text_of(markup)
    usages = {
        html.unescape(re.sub(r"<[^>]+>", "", pre)).strip()
        for pre in re.findall(r"<pre>(.*?)</pre>", markup, flags=re.DOTALL)
    }
    paths = commands(cli)
    assert ("convert",) in paths
    for path in paths:
        name = " ".join(path)
        command = cli
        for part in path:
            command = command.commands[part]
        assert any(u.startswith(f"ebook2audio {name} [OPTIONS]") for u in usages), (
            f"no usage line for `ebook2audio {name}` on the CLI page; usage lines: {sorted(usages)}"
        )
        assert re.search(rf'<section id="ebook2audio-{"-".join(path)}">', markup), name
        help_start = " ".join((command.help or "").split()[:5])
        assert help_start in text, f"`ebook2audio {name}`: help {help_start!r} not on the CLI page"
    # convert's options are rendered, with their help text
    assert "--allow-gaps" in text
    assert re.search(r'id="[^"]*convert-allow-gaps"', markup)
    allow_gaps = next(p for p in cli.commands["convert"].params if p.name == "allow_gaps")
    assert " ".join(allow_gaps.help.split()[:5]) in text


def test_api_reference_holds_the_docstrings(site):
    markup = page(site, "api.html")
    first_line = inspect.getdoc(e2a.convert).splitlines()[0]
    assert first_line in text_of(markup)
    # every public name, and the pieces plugin authors and notebooks use, has its entry
    names = [f"ebook2audio_dask.{name}" for name in e2a.__all__ if not name.endswith("Error")]
    names += [
        "ebook2audio_dask.errors.BookError",
        "ebook2audio_dask.engines.base.Engine",
        "ebook2audio_dask.storage.ChunkStore",
        "ebook2audio_dask.cluster.GPULocalCluster",
    ]
    missing = [name for name in names if f'id="{name}"' not in markup]
    assert not missing, f"not in the API reference: {missing}"


def figure_rows() -> list[tuple[str, str]]:
    """(figure, value) of each row of RESULTS.md's table whose cells are plain text."""
    rows = []
    for line in RESULTS_MD.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 3 or set(cells[1]) <= set("-: "):
            continue
        figure, value = cells[1], cells[2]
        markup = re.search(r"[`*_\[\]<>&'\"]|--|\.\.\.", figure + value)
        if figure == "figure" or not value or markup:
            continue
        rows.append((figure, value))
    return rows


def test_benchmark_results_are_included(site):
    rows = figure_rows()
    assert rows, f"no table row found in {RESULTS_MD}"
    figure, value = rows[0]
    markup = page(site, "benchmarks/results.html")
    rendered = [text_of(tr) for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", markup, flags=re.DOTALL)]
    assert any(figure in row and value in row for row in rendered), (figure, value, rendered[:5])
    assert "Method" in headings(page(site, "benchmarks/method.html")) | headings(markup)
