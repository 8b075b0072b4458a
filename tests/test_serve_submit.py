"""``ebook2audio submit`` and :class:`~ebook2audio_dask.serve.client.ServerClient` against a
real ``ebook2audio serve`` process (tests/serve_helpers.ServerProcess) on a loopback port.

The server runs with a token, so every request here carries it (from --token-file or
$EBOOK2AUDIO_TOKEN) and the refusals of a missing or wrong one are real.  Books are spoken
by espeak (real speech), or by the ``faulty`` test engine (espeak that fails on a word) for
a book that fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, check_m4b_against_report, load_report, run_cli, wait_for
from serve_helpers import ServerProcess, free_port

from ebook2audio_dask.errors import EXIT_BOOK_FAILED, EXIT_OK, EXIT_USAGE
from ebook2audio_dask.serve.client import ServerClient, ServerError, safe_file_name

SAMPLE = ROOT / "examples" / "childrens-literature.epub"
TOKEN = "submit-test-token-0123456789"
#: A word of chapter 2 of the sample book: the ``faulty`` engine fails every chunk holding it.
FAIL_WORD = "Hebrew"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("submit") / "data"
    proc = ServerProcess(data, token=TOKEN, env={"E2A_FAULTY_FAIL": FAIL_WORD})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def token_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("token") / "token"
    path.write_text(TOKEN + "\n")
    return path


def submit(*args: str, env: dict | None = None, timeout: float = 600):
    """``ebook2audio submit ARGS`` in a fresh process, $EBOOK2AUDIO_TOKEN unset unless given."""
    full = {"EBOOK2AUDIO_TOKEN": ""}
    full.update(env or {})
    return run_cli("submit", *args, env=full, timeout=timeout)


def one_error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_submit_wait_downloads_a_valid_m4b(server, token_file, tmp_path):
    out = tmp_path / "out"
    proc = submit(
        str(SAMPLE), "--server", server.url, "--token-file", str(token_file),
        "--chapters", "2-3", "--engine", "espeak", "-o", str(out), "--no-progress",
    )  # fmt: skip
    assert proc.returncode == EXIT_OK, proc.stdout + proc.stderr + server.log()
    m4b = out / "childrens-literature.m4b"
    report = load_report(out / "childrens-literature.report.json")
    assert len(report["chapters"]) == 2
    check_m4b_against_report(m4b, report, expect_cover=True)
    done = [line for line in proc.stdout.splitlines() if line.startswith("done: ")]
    assert len(done) == 1 and str(m4b) in done[0] and "2 chapters" in done[0], proc.stdout
    assert "job " in proc.stderr  # the job's id and URL


def test_submit_no_wait_then_the_client_follows_and_downloads(server, tmp_path):
    proc = submit(
        str(SAMPLE), "--server", server.url, "--chapters", "2", "--engine", "espeak",
        "--subtitles", "vtt", "--no-wait", "--priority", "3", env={"EBOOK2AUDIO_TOKEN": TOKEN},
    )  # fmt: skip
    assert proc.returncode == EXIT_OK, proc.stdout + proc.stderr
    line = proc.stdout.strip()
    assert line.startswith("job ") and f"{server.url}/api/jobs/" in line, proc.stdout
    job_id = line.split()[1].rstrip(":")
    with ServerClient(server.url, TOKEN) as client:
        job = client.job(job_id)
        assert job["priority"] == 3
        assert job["options"]["subtitles"] == "vtt"
        assert job_id in [j["id"] for j in client.jobs()]
        states = [j["state"] for j in client.events(job_id)]
        assert states[-1] == "done", states
        job = client.job(job_id)
        (book,) = job["books"]
        kinds = {f["kind"] for f in book["files"]}
        assert {"audio", "report", "subtitles"} <= kinds, book["files"]
        for f in book["files"]:
            path = client.download(job_id, 0, f["name"], tmp_path)
            assert path == tmp_path / f["name"] and path.stat().st_size == f["size"]
        assert not list(tmp_path.glob(".*.part"))
        vtt = next(tmp_path.glob("*.vtt")).read_text(encoding="utf-8")
        assert vtt.startswith("WEBVTT")
        with pytest.raises(ServerError) as err:
            client.download(job_id, 0, "nope.m4b", tmp_path)
        assert err.value.status == 404 and not (tmp_path / "nope.m4b").exists()
        with pytest.raises(ValueError):
            client.download(job_id, 0, "../escape.m4b", tmp_path)


def test_bad_server_url_is_one_line_exit_2(tmp_path):
    port = free_port()  # nothing listens there
    proc = submit(str(SAMPLE), "--server", f"http://127.0.0.1:{port}", "-o", str(tmp_path))
    assert proc.returncode == EXIT_USAGE, proc.stderr
    line = one_error_line(proc)
    assert f"http://127.0.0.1:{port}" in line and "cannot connect" in line
    proc = submit(str(SAMPLE), "--server", "ftp://example.org", "-o", str(tmp_path))
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert "not a server URL" in one_error_line(proc)


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_missing_or_wrong_token_is_one_line_exit_2(server, tmp_path, token):
    env = {"EBOOK2AUDIO_TOKEN": token} if token else None
    proc = submit(str(SAMPLE), "--server", server.url, "-o", str(tmp_path), env=env)
    assert proc.returncode == EXIT_USAGE, proc.stderr
    line = one_error_line(proc)
    assert server.url in line and "401" in line and "token" in line
    assert token is None or token not in proc.stderr + proc.stdout  # never echoed


def test_a_failing_book_exits_1_and_the_other_still_finishes(server, token_file, tmp_path):
    broken = tmp_path / "broken.epub"
    broken.write_bytes(b"PK\x03\x04 this is no zip archive")
    out = tmp_path / "out"
    proc = submit(
        str(broken), str(SAMPLE), "--server", server.url, "--token-file", str(token_file),
        "--chapters", "3", "--engine", "espeak", "-o", str(out), "--no-progress",
    )  # fmt: skip
    assert proc.returncode == EXIT_BOOK_FAILED, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "broken.epub" in errors[0], proc.stderr
    assert (out / "childrens-literature.m4b").is_file()
    assert "1 of 2 book(s) failed" in proc.stderr


def test_a_book_failing_on_the_cluster_exits_1(server, token_file, tmp_path):
    out = tmp_path / "out"
    proc = submit(
        str(SAMPLE), "--server", server.url, "--token-file", str(token_file),
        "--chapters", "2", "--engine", "faulty", "--retries", "0", "-o", str(out),
        "--no-progress",
    )  # fmt: skip
    assert proc.returncode == EXIT_BOOK_FAILED, proc.stdout + proc.stderr + server.log()
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors and "childrens-literature" in errors[0], proc.stderr
    assert not (out / "childrens-literature.m4b").exists()
    failures = list(out.glob("*.failures.jsonl"))
    assert failures, "the book's failures file is downloaded with its other outputs"
    assert FAIL_WORD in failures[0].read_text(encoding="utf-8")


def test_refused_options_are_usage_errors(server, token_file, tmp_path):
    proc = submit(
        str(SAMPLE), "--server", server.url, "--token-file", str(token_file),
        "--engine", "espeak", "--voice", "no-such-voice", "-o", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == EXIT_USAGE, proc.stdout + proc.stderr
    line = one_error_line(proc)
    assert server.url in line and "422" in line and "voice" in line
    proc = submit(str(SAMPLE), "--server", server.url, "--chapters", "3-1", "-o", str(tmp_path))
    assert proc.returncode == EXIT_USAGE and "3-1" in one_error_line(proc)


def test_cancel_and_retry_through_the_client(server, tmp_path):
    with ServerClient(server.url, TOKEN) as client:
        engines = {e["name"]: e for e in client.engines()}
        assert engines["espeak"]["available"] and engines["espeak"]["voices"]
        upload = client.upload(SAMPLE)
        assert upload["summary"]["title"] and upload["error"] is None
        job = client.create_job([upload["id"]], {"engine": "espeak"}, priority=-5)
        job = client.cancel(job["id"])
        job = wait_for(
            lambda: (j := client.job(job["id"]))["state"] == "cancelled" and j,
            120,
            "the job to be cancelled",
        )
        assert all(b["state"] == "cancelled" for b in job["books"])
        job = client.retry(job["id"])
        assert job["state"] in ("queued", "running"), job
        client.cancel(job["id"])


@pytest.mark.slow
def test_wait_survives_a_server_restart_and_split_chapters_go_to_a_folder(tmp_path):
    """SIGKILL the server mid-job, start it again on the same port (the job resumes from the
    chunk store): ``submit --wait`` reconnects, the job finishes, every chapter file is
    downloaded into <output>/<stem>/."""
    server = ServerProcess(tmp_path / "data")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ebook2audio_dask", "submit", str(SAMPLE), "--server",
           server.url, "--chapters", "2-6", "--engine", "espeak", "--split", "chapters",
           "-o", str(out), "--no-progress"]  # fmt: skip
    with server:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**os.environ, "EBOOK2AUDIO_TOKEN": ""})  # fmt: skip
        try:
            with ServerClient(server.url) as client:
                wait_for(
                    lambda: any(
                        j["state"] == "running" and j["progress"]["chunks_done"] > 0
                        for j in client.jobs()
                    ),
                    300,
                    "the job to have spoken a chunk",
                )
            server.kill()
            time.sleep(3)  # submit finds no server for a while
            server.start()
            stdout, stderr = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == EXIT_OK, stdout + stderr + server.log()
    files = sorted(p.name for p in (out / "childrens-literature").iterdir())
    assert len(files) == 5 and all(f.endswith(".m4b") for f in files), files
    assert (out / "childrens-literature.report.json").is_file()
    assert "done: 5 files in" in stdout, stdout


def test_safe_file_name_refuses_paths():
    assert safe_file_name("My Book.m4b") == "My Book.m4b"
    for bad in ("", ".", "..", "../x.m4b", "a/b.m4b", "a\\b.m4b", "x\x1b[2J.m4b", "/etc/passwd"):
        with pytest.raises(ValueError):
            safe_file_name(bad)


def test_server_error_is_one_line_with_its_exit_code():
    err = ServerError("http://127.0.0.1:1", "GET /api/jobs: 500 boom\nsecond line", status=500)
    assert "\n" not in str(err) and str(err).startswith("http://127.0.0.1:1: ")
    assert err.exit_code == EXIT_BOOK_FAILED
    assert ServerError("http://h", "x", status=422).exit_code == EXIT_USAGE
    assert ServerError("http://h", "cannot connect").exit_code == EXIT_USAGE
