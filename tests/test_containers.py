"""The container image and compose.yaml, for real, with podman (issue 20).

Builds a base image from Debian packages with mmdebstrap (cached root file system,
``tests/containers.py``), the project's image from the Containerfile offline (a wheelhouse
made on the host, ``podman build --network none``), brings compose.yaml up with
podman-compose (scheduler, two workers, ``ebook2audio serve``; project name unique to the
run), converts two chapters of the sample book with Piper through the server's API,
kills one worker container while the job runs, and checks that the job completes with no
chunk lost (the report's chunk counts, the chunks in the store's volume) and that the M4B
agrees with its report. ``podman-compose down -v`` then removes the stack; everything
the run made (images, containers, volumes, networks) lives in an isolated podman store
that is removed at the end, also on failure.

Needs root, podman, podman-compose, runc, mmdebstrap and CNI's dnsname plugin
(``.ci/install-dev.sh`` installs them) and the Debian mirror (for the base image, once)
and PyPI (for the wheelhouse) from the host. A step that cannot work here fails with the
reason; nothing is skipped.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import wave

import httpx
import pytest
from containers import (
    SAMPLE,
    Compose,
    ContainerSetupError,
    Podman,
    base_rootfs,
    build_context,
    build_image,
    free_port,
    make_wheelhouse,
    missing_programs,
    run_id,
    wait_for,
)
from helpers import check_m4b_against_report

from ebook2audio_dask.serve.client import FINAL_STATES, ServerClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

EXTRAS = "piper,espeak,serve"
CHAPTERS = "2-3"  # 8,975 characters, 55 chunks with Piper
SERVICES = ("scheduler", "worker-1", "worker-2", "serve")
DNSNAME = "/usr/lib/cni/dnsname"


def _log(msg: str) -> None:
    print(msg, flush=True)


@pytest.fixture(scope="module")
def podman():
    if os.geteuid() != 0:
        pytest.fail("the container test runs podman as root (CI runs it as root); not root here")
    missing = missing_programs()
    if missing:
        pytest.fail(f"not installed: {', '.join(missing)} (.ci/install-dev.sh installs them)")
    if not os.path.exists(DNSNAME):
        pytest.fail(
            f"{DNSNAME} is missing: podman's CNI networks have no name resolution, so the "
            "workers cannot find the scheduler by its service name (apt-get install "
            "golang-github-containernetworking-plugin-dnsname; .ci/install-dev.sh does)"
        )
    pm = Podman()
    try:
        yield pm
    finally:
        problems = pm.destroy()
        if problems:
            _log("containers: cleanup problems: " + "; ".join(problems))


@pytest.fixture(scope="module")
def image(podman, tmp_path_factory):
    """The project's image, built offline from the Containerfile; its tag."""
    rid = run_id()
    try:
        tar = base_rootfs(log=_log)
        base = podman.import_base(tar, f"localhost/e2a-test-base:{rid}")
        python = podman.image_python(base)
        context = build_context(tmp_path_factory.mktemp("context"))
        make_wheelhouse(context, EXTRAS, python, log=_log)
        return build_image(podman, context, f"localhost/e2a-test:{rid}", base, extras=EXTRAS,
                           log=_log)  # fmt: skip
    except ContainerSetupError as exc:
        pytest.fail(f"the image could not be built: {exc}")


def test_image_runs_as_a_user_with_the_cpu_engines(podman, image):
    info = podman.json("image", "inspect", image)[0]
    user = info["Config"].get("User", "")
    assert user and not user.startswith(("0", "root")), f"the image runs as {user!r}"
    env = "\n".join(info["Config"].get("Env") or [])
    assert "TOKEN=" not in env and "SECRET" not in env.upper(), env
    out = podman("run", "--rm", "--network", "none", image, "engines", "--json")
    engines = {e["name"]: e for e in json.loads(out[out.index("[") :])}
    for name in ("piper", "espeak"):
        assert engines[name]["available"], engines[name]
    uid = podman("run", "--rm", "--network", "none", image, "id", "-u").strip().splitlines()[-1]
    assert uid != "0"


def _chunk_files(store) -> list:
    return sorted(p for p in store.rglob("*.wav") if not p.name.startswith("."))


def test_compose_converts_through_the_cluster_and_survives_a_killed_worker(podman, image,
                                                                            tmp_path):  # fmt: skip
    rid = run_id()
    project = f"e2atest{rid}"
    token = secrets.token_urlsafe(24)
    ports = {name: free_port() for name in ("SCHEDULER_PORT", "DASHBOARD_PORT", "SERVE_PORT")}
    env = {
        "E2A_IMAGE": image,
        "EBOOK2AUDIO_TOKEN": token,
        "BIND_ADDRESS": "127.0.0.1",
        "SCHEDULER": f"tcp://scheduler:{ports['SCHEDULER_PORT']}",
        "WORKER_MEMORY_LIMIT": "3g",
        **{k: str(v) for k, v in ports.items()},
    }
    try:
        compose = Compose(podman, tmp_path / "compose", project, env)
    except ContainerSetupError as exc:
        pytest.fail(str(exc))
    url = f"http://127.0.0.1:{ports['SERVE_PORT']}"
    try:
        t0 = time.monotonic()
        compose("up", "-d", "--no-build", *SERVICES, timeout=600)
        _log(f"containers: compose up returned in {time.monotonic() - t0:.1f} s")
        states = {c["Labels"]["com.docker.compose.service"]: c["State"]
                  for c in compose.containers()}  # fmt: skip
        assert set(states) == set(SERVICES), states

        with ServerClient(url, token=token, timeout=120) as server:
            wait_for(lambda: server.health()["connected"], 180, "the server connected")
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
                wait_for(lambda: http.get("/api/cluster").json()["workers"] == 2, 180,
                         "both workers joined the scheduler")  # fmt: skip
            upload = server.upload(SAMPLE)
            assert not upload["error"], upload
            job = server.create_job([{"upload_id": upload["id"], "chapters": CHAPTERS}],
                                    {"engine": "piper"})  # fmt: skip

            # kill worker-1 once synthesis is under way (chunks done, not all of them)
            def under_way():
                j = server.job(job["id"])
                p = j["progress"]
                assert j["state"] not in FINAL_STATES, f"the job ended before the kill: {j}"
                return j if p["chunks_done"] >= 2 else None

            at_kill = wait_for(under_way, 600, "synthesis under way", interval=0.2)
            victim = compose.containers("worker-1")[0]
            podman("kill", victim["Id"])
            _log(f"containers: killed worker-1 with {at_kill['progress']['chunks_done']} of "
                 f"{at_kill['progress']['chunks_total']} chunks done")  # fmt: skip
            assert at_kill["progress"]["chunks_done"] < at_kill["progress"]["chunks_total"]

            done = wait_for(lambda: (j := server.job(job["id"]))["state"] in FINAL_STATES and j,
                            1500, "the job finished", interval=1.0)  # fmt: skip
            book = done["books"][0]
            assert done["state"] == "done", (done, compose.logs())
            assert book["state"] == "done" and book["error"] is None, book
            assert book["chunks_done"] == book["chunks_total"] > at_kill["progress"]["chunks_done"]
            out = tmp_path / "downloads"
            out.mkdir()
            names = {f["kind"]: f["name"] for f in book["files"]}
            for f in book["files"]:
                server.download(job["id"], 0, f["name"], str(out))
        report = json.loads((out / names["report"]).read_text())
        m4b = out / names["audio"]

        # the killed worker really died (and compose's restart policy may have restarted it)
        info = podman.json("container", "inspect", victim["Id"])[0]
        assert info["State"]["ExitCode"] == 137 or info.get("RestartCount", 0) >= 1, info["State"]

        # no chunk lost: every unique chunk synthesised once into the (fresh) store volume
        totals = report["totals"]
        assert totals["chunks_failed"] == 0 and not report["gaps"] and not report["errors"], totals
        assert totals["chunks_from_cache"] == 0, totals
        assert totals["chunks_synthesized"] == totals["unique_chunks"] > 0, totals
        assert totals["chunks"] == book["chunks_total"], (totals, book)
        store = compose.volume_path("cache")
        chunks = _chunk_files(store / "chunks" / "piper")
        assert len(chunks) == totals["unique_chunks"], (len(chunks), totals)
        for path in chunks:
            with wave.open(str(path)) as w:
                assert w.getnframes() > 0 and w.getframerate() == report["sample_rate"], path
        check_m4b_against_report(m4b, report, expect_cover=bool(upload.get("cover_url")))
        # the audiobook is in the shared output volume too, where the merge wrote it
        assert list(compose.volume_path("out").rglob(m4b.name)), "no M4B in the out volume"
    except (ContainerSetupError, TimeoutError) as exc:
        pytest.fail(f"{exc}\n{compose.logs()}")
    finally:
        down = compose("down", "-v", timeout=300, check=False)
        left = compose.containers()
        label = f"label=io.podman.compose.project={project}"
        vols = podman("volume", "ls", "--quiet", "--filter", label, check=False)
        nets = podman("network", "ls", "--quiet", "--filter", label, check=False).split()
        if nets:  # podman-compose 1.0 leaves its networks: ours are removed here
            podman.remove_network(*nets)
    assert not left, (left, down)
    assert not vols.strip(), (vols, down)
