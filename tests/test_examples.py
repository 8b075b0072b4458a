"""The examples in examples/ run for real: the notebook, the SLURM scripts, the fixed-cluster
script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ebook2audio_dask as e2a

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BOOK = EXAMPLES / "childrens-literature.epub"


def shortest_chapter() -> e2a.Chapter:
    return min(e2a.read_book(BOOK).chapters, key=lambda ch: ch.chars)


def outputs(cell) -> list:
    return cell.get("outputs", [])


def stdout_of(cell) -> str:
    return "".join(
        o["text"] for o in outputs(cell) if o["output_type"] == "stream" and o["name"] == "stdout"
    )


# --- the notebook ----------------------------------------------------------------------------


def test_notebook_converts_and_plays_a_chapter(tmp_path, monkeypatch):
    """Execute examples/convert_a_book.ipynb in a kernel of this interpreter, with examples/ as
    cwd."""
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    path = EXAMPLES / "convert_a_book.ipynb"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and not any(c.outputs or c.execution_count for c in code), (
        "commit the notebook without outputs"
    )
    # one more cell, to check where and with which interpreter the kernel ran
    nb.cells.append(
        nbformat.v4.new_code_cell("import os, sys\nprint(sys.executable)\nprint(os.getcwd())")
    )

    out = tmp_path / "out"
    monkeypatch.setenv(
        "E2A_EXAMPLE_OUT", str(out)
    )  # the kernel inherits this process's environment
    # A kernelspec of this very interpreter: a user's or the system's "python3" may be another one.
    spec = tmp_path / "kernels" / "e2a-examples"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "ebook2audio_dask tests", "language": "python",
    }))  # fmt: skip
    km = KernelManager(
        kernel_name="e2a-examples",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")]),
    )
    client = NotebookClient(nb, km=km, timeout=300, resources={"metadata": {"path": str(EXAMPLES)}})
    try:
        client.execute()  # raises CellExecutionError on the first failing cell
    finally:
        if km.has_kernel:  # a kernel manager given to nbclient is not shut down by it
            km.shutdown_kernel(now=True)

    assert not [o for c in code for o in outputs(c) if o["output_type"] == "error"]
    executable, cwd = stdout_of(nb.cells[-1]).split()
    assert Path(executable) == Path(sys.executable) and Path(cwd) == EXAMPLES

    chapter = shortest_chapter()
    text = "\n".join(stdout_of(c) for c in code)
    assert "dashboard: http://127.0.0.1:" in text
    assert f"Converting chapter {chapter.index}: {chapter.title}" in text
    # the report's chapter, as printed, is the book's
    assert f"Chapter {chapter.index}. {chapter.title}: 0.0 s to " in text

    m4b = out / "childrens-literature.m4b"
    assert m4b.stat().st_size > 100_000
    report = json.loads((out / "childrens-literature.report.json").read_text())
    assert [(c["index"], c["title"]) for c in report["chapters"]] == [
        (chapter.index, chapter.title)
    ]
    assert report["totals"]["audio_s"] > 60 and report["totals"]["chunks_failed"] == 0
    assert any(
        p.is_file() for p in (out / "chunks").rglob("*")
    )  # the chunk store is under the output folder

    # progress bars (tqdm widgets) were displayed while converting
    widgets = [
        o
        for c in code
        for o in outputs(c)
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert widgets and any("chunk" in o["data"]["text/plain"] for o in widgets)
    # the clip plays inline: an <audio> element with the WAV embedded
    audio = [
        o["data"]["text/html"]
        for c in code
        for o in outputs(c)
        if "<audio" in o.get("data", {}).get("text/html", "")
    ]
    assert len(audio) == 1 and "data:audio/x-wav;base64," in audio[0]
    assert (out / "childrens-literature-first-20s.wav").stat().st_size > 20 * 16_000


# --- SLURM: the sbatch script and the dask-jobqueue script ----------------------------------

try:
    from test_slurm import slurm
except pytest.skip.Exception as exc:  # tests/test_slurm.py needs dask-jobqueue
    _why = str(exc)

    @pytest.fixture
    def slurm():
        if os.environ.get("CI"):
            pytest.fail(_why)
        pytest.skip(_why)


FINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
}


def _job_state(job: str, env: dict) -> tuple[str, str]:
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
    return fields.get("JobState", "?"), fields.get("ExitCode", "?")


def _wait_for_job(job: str, env: dict, timeout: float) -> tuple[str, str]:
    """Poll until the job has ended and its processes are gone (``sbatch --wait`` polls slowly)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state, code = _job_state(job, env)
        if state in FINAL_STATES:
            return state, code
        time.sleep(0.5)
    subprocess.run(["scancel", job], env=env, timeout=30, check=False)
    raise TimeoutError(f"SLURM job {job} still {state} after {timeout:.0f} s")


def _squeue(env: dict) -> list[str]:
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i %j %T"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return [line for line in out.stdout.splitlines() if line.strip()]


@pytest.mark.slow
def test_sbatch_script_converts_in_one_allocation(slurm, tmp_path):
    """examples/slurm/convert.sbatch: scheduler + client on the batch host, `srun dask worker` per
    GPU."""
    chapter = shortest_chapter()
    out, log = tmp_path / "out", tmp_path / "job.log"
    env = dict(slurm, PYTHON=sys.executable, E2A_INTERFACE="lo", E2A_DASHBOARD="127.0.0.1:0")
    # the test node has 2 CPUs and 2 (fake) GPUs: one CPU per worker instead of the script's 4
    submit = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--cpus-per-task=1",
            "--mem-per-cpu=1000",
            "--time=00:10:00",
            f"--output={log}",
            str(EXAMPLES / "slurm" / "convert.sbatch"),
            str(BOOK),
            "-o",
            str(out),
            "--cache",
            str(tmp_path / "chunks"),
            "--chapters",
            str(chapter.index),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert submit.returncode == 0, submit.stderr
    job = submit.stdout.strip().split(";")[0]
    state, code = _wait_for_job(job, env, timeout=300)
    text = log.read_text(errors="replace")
    assert (state, code) == ("COMPLETED", "0:0"), text[-4000:]

    # two workers, each in its own task of the job with its own GPU from SLURM
    gpus = sorted(
        line.rsplit("=", 1)[1] for line in text.splitlines() if line.startswith("worker ")
    )
    assert gpus == ["0", "1"], text[-4000:]
    assert "scheduler tcp://127.0.0.1:" in text and ", 2 workers" in text
    assert f"done: {out / 'childrens-literature.m4b'}" in text
    assert (out / "childrens-literature.m4b").stat().st_size > 100_000
    report = json.loads((out / "childrens-literature.report.json").read_text())
    assert [(c["index"], c["title"]) for c in report["chapters"]] == [
        (chapter.index, chapter.title)
    ]
    assert len(report["chunks_per_worker"]) == 2  # both workers spoke
    assert not list(tmp_path.glob(".dask-scheduler-*.json"))  # the script cleaned up after itself
    assert not _squeue(slurm)


@pytest.mark.slow
def test_jobqueue_script_converts_on_slurm_jobs(slurm, tmp_path):
    """examples/slurm/jobqueue_convert.py: SLURMCluster workers tagged GPU=1, cancelled at the
    end."""
    chapter = shortest_chapter()
    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "slurm" / "jobqueue_convert.py"),
            str(BOOK),
            "-o",
            str(out),
            "--cache",
            str(tmp_path / "chunks"),
            "--chapter",
            str(chapter.index),
            "--partition",
            "debug",
            "--jobs",
            "2",
            "--cores",
            "1",
            "--memory",
            "2GB",
            "--walltime",
            "00:10:00",
            "--interface",
            "lo",
            "--log-directory",
            str(tmp_path / "logs"),
        ],
        env=slurm,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (
        "#SBATCH --gres=gpu:1" in run.stdout and "--resources GPU=1" in run.stdout
    )  # the job script
    assert f"done: {out / 'childrens-literature.m4b'}" in run.stdout
    report = json.loads((out / "childrens-literature.report.json").read_text())
    assert [(c["index"], c["title"]) for c in report["chapters"]] == [
        (chapter.index, chapter.title)
    ]
    assert 1 <= len(report["chunks_per_worker"]) <= 2
    assert list(
        (tmp_path / "logs").glob("*.err")
    )  # the workers ran as SLURM jobs (their output files)
    time.sleep(1)
    assert not [line for line in _squeue(slurm) if "RUNNING" in line]  # the jobs were cancelled


# --- a fixed cluster on 127.0.0.1 -----------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_using(port: int) -> list[str]:
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "dask" in cmd and (f"127.0.0.1:{port}" in cmd or f"--port {port}" in cmd):
            found.append(f"{p.info['pid']}: {cmd}")
    return found


def _run_local(tmp_path, out, **env) -> tuple[subprocess.CompletedProcess, int]:
    port = _free_port()
    run = subprocess.run(
        ["bash", str(EXAMPLES / "fixed_cluster" / "run_local.sh"), str(BOOK), str(out)],
        env=dict(os.environ, PYTHON=sys.executable, PORT=str(port), **env),
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    return run, port


def test_fixed_cluster_script_converts_on_two_workers(tmp_path):
    """examples/fixed_cluster/run_local.sh: `dask scheduler` + 2 `dask worker --resources GPU=1`."""
    chapter = shortest_chapter()
    out = tmp_path / "out"
    run, port = _run_local(tmp_path, out, CHAPTERS=str(chapter.index))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"scheduler tcp://127.0.0.1:{port}: 2 workers" in run.stdout
    assert "stopped the scheduler and the workers" in run.stdout
    assert not _processes_using(port)

    assert (out / "childrens-literature.m4b").stat().st_size > 100_000
    report = json.loads((out / "childrens-literature.report.json").read_text())
    assert [(c["index"], c["title"]) for c in report["chapters"]] == [
        (chapter.index, chapter.title)
    ]
    # both workers the script started spoke part of the chapter
    started = set()
    for log in (out / "logs").glob("worker-*.log"):
        started |= {
            line.split("Start worker at:")[1].strip()
            for line in log.read_text().splitlines()
            if "Start worker at:" in line
        }
    assert len(started) == 2
    assert set(report["chunks_per_worker"]) == started


def test_fixed_cluster_script_stops_everything_when_the_conversion_fails(tmp_path):
    out = tmp_path / "out"
    run, port = _run_local(tmp_path, out, CHAPTERS="999")  # the book has 15 chapters: a usage error
    assert run.returncode == 2, run.stdout[-3000:] + run.stderr[-3000:]
    assert "no chapter 999" in run.stderr
    assert "stopped the scheduler and the workers" in run.stdout
    assert not _processes_using(port)
    assert not (out / "childrens-literature.m4b").exists()
