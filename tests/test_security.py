"""TLS between client, scheduler and workers; the embedded cluster's exposure; no secrets
leaking."""

from __future__ import annotations

import json
import logging

import pytest
from helpers import run_cli, wait_for
from test_external_cluster import DASK, WORKER

import ebook2audio_dask as e2a

pytest.importorskip("cryptography", reason="cryptography is part of the dev install")

from tls_certs import make_certs

BOOK = (
    "<html lang='en'><body><h1>Secure</h1><p>Spoken over an encrypted connection.</p></body></html>"
)


def test_embedded_cluster_listens_on_loopback_only(tmp_path):
    from distributed import Client

    with e2a.local_cluster(1, dashboard_address=None) as cluster, Client(cluster) as c:
        addresses = [cluster.scheduler_address, *c.scheduler_info()["workers"]]
        assert all(a.startswith("tcp://127.0.0.1:") for a in addresses), addresses


def test_embedded_cluster_over_tls(tmp_path, cache_dir):
    from distributed import Client

    book = tmp_path / "secure.html"
    book.write_text(BOOK)
    with e2a.local_cluster(1, dashboard_address=None, tls=True) as cluster, Client(cluster) as c:
        addresses = [cluster.scheduler_address, *c.scheduler_info()["workers"]]
        assert all(a.startswith("tls://127.0.0.1:") for a in addresses), addresses
        [r] = e2a.convert(
            str(book), str(tmp_path / "out"), engine="espeak", client=c, cache=cache_dir
        )
    assert r.ok, r.error


@pytest.fixture
def tls_cluster(tmp_path):
    """A tls:// ``dask scheduler`` and one GPU-tagged ``dask worker``, with self-made
    certificates."""
    import contextlib
    import os
    import signal
    import subprocess

    certs = make_certs(tmp_path / "certs")
    tls = [
        "--tls-ca-file",
        str(certs["ca"]),
        "--tls-cert",
        str(certs["cert"]),
        "--tls-key",
        str(certs["key"]),
    ]
    sched_file = tmp_path / "scheduler.json"
    procs = []
    try:
        procs.append(
            subprocess.Popen(
                DASK
                + [
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--protocol",
                    "tls",
                    "--no-dashboard",
                    "--scheduler-file",
                    str(sched_file),
                    *tls,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        wait_for(lambda: sched_file.exists() and sched_file.stat().st_size > 0, 60, "the scheduler")
        address = json.loads(sched_file.read_text())["address"]
        procs.append(
            subprocess.Popen(
                WORKER
                + [
                    "--scheduler-file",
                    str(sched_file),
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--resources",
                    "GPU=1",
                    *tls,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        yield address, certs
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(timeout=30)


def test_convert_against_a_tls_scheduler(tls_cluster, tmp_path):
    address, certs = tls_cluster
    assert address.startswith("tls://127.0.0.1:")
    book = tmp_path / "secure.html"
    book.write_text(BOOK)
    common = [
        "convert",
        str(book),
        "-o",
        str(tmp_path / "out"),
        "--engine",
        "espeak",
        "--no-progress",
        "--cache",
        str(tmp_path / "chunks"),
        "--scheduler",
        address,
    ]
    ok = run_cli(
        *common,
        "--tls-ca-file",
        str(certs["ca"]),
        "--tls-cert",
        str(certs["cert"]),
        "--tls-key",
        str(certs["key"]),
        timeout=180,
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "out" / "secure.m4b").is_file()
    # without certificates: refused, one clear line, usage exit code
    plain = run_cli(
        *common,
        env={
            "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "5s",
            "DASK_EBOOK2AUDIO__CLUSTER__CONNECT_TIMEOUT": "5",
        },
        timeout=120,
    )
    assert plain.returncode == 2, plain.stderr
    assert (
        f"cannot connect to scheduler {address}" in plain.stderr and "--tls-ca-file" in plain.stderr
    )
    assert "Traceback" not in plain.stderr
    missing = run_cli(*common, "--tls-ca-file", str(certs["ca"]), timeout=60)
    assert (
        missing.returncode == 2
        and "TLS needs at least --tls-ca-file and --tls-cert" in missing.stderr
    )


def test_storage_secrets_never_reach_task_names_reports_or_logs(tmp_path, cache_dir, caplog):
    """fsspec credentials travel inside task arguments only: not in keys (the dashboard's
    task names), reports, errors or logs."""
    from distributed import Client

    secret = "s3cr3t-Value-For-Test"
    book = tmp_path / "secure.html"
    book.write_text(BOOK)
    options = {"key": "AKIA-TEST-ID", "secret": secret}
    caplog.set_level(logging.DEBUG)
    keys: set[str] = set()
    with e2a.local_cluster(1, dashboard_address=None) as cluster, Client(cluster) as c:

        def collect(job):
            keys.update(str(f.key) for f in [job.parse, job.plan])

        [r] = e2a.convert(
            str(book),
            str(tmp_path / "out"),
            engine="espeak",
            client=c,
            cache=cache_dir,
            storage_options=options,
            on_job=collect,
        )
        keys.update(
            str(k) for k in c.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.tasks))
        )
        [bad] = e2a.convert(
            str(tmp_path / "missing.epub"),
            str(tmp_path / "out"),
            client=c,
            cache=cache_dir,
            storage_options=options,
        )
    assert r.ok, r.error
    report = (tmp_path / "out" / "secure.report.json").read_text()
    texts = [*keys, report, bad.error or "", caplog.text, repr(r)]
    assert keys and not [t for t in texts if secret in t or "AKIA-TEST-ID" in t]
