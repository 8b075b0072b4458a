"""The container image and compose.yaml (issue 20): image size, start-up, and containers vs host.

Everything runs in an isolated podman store (tests/containers.py: base image from Debian
packages made with mmdebstrap, wheelhouse made on the host, ``podman build --network none``
of the Containerfile), removed at the end.

(1) **Image size** of the CPU variant (extras piper,espeak,serve): ``podman image inspect``
(the base's size beside it), the biggest layers of ``podman history`` and the biggest
packages in the image's site-packages (``du``): what dominates.  Target <= 1.2 GB.

(2) **Compose up to first chunk**: with the image built, ``podman-compose up -d`` of the
scheduler, two workers and ``ebook2audio serve`` (fresh volumes), then as soon as the server
answers: upload the sample book, create a job (chapter {warm} with Piper) and poll it every
0.2 s until its first chunk is synthesised. Figure: seconds from ``up`` to that chunk.
Target <= 60 s.

(3) **Containers vs host**: that job runs to its end (both workers load Piper), then chapters
{chapters} of the sample book with Piper are converted through the containers' server (a
cold chunk store for those chapters) and, the same way, through ``ebook2audio serve
--workers 2 --engine-threads 1`` run on the host (fresh data folder, its own warm-up job
first). Each timed from the job's creation until the API reports it done (polled every
0.2 s). Figure: containers / host, one run each; target <= 1.10.

Prints one JSON line.

    python benchmarks/bench_containers.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))

from containers import (  # noqa: E402
    SAMPLE,
    Compose,
    Podman,
    base_rootfs,
    build_context,
    build_image,
    free_port,
    make_wheelhouse,
    parse_size,
    run_id,
    wait_for,
)
from serve_helpers import ServerProcess  # noqa: E402

from ebook2audio_dask.serve.client import FINAL_STATES, ServerClient  # noqa: E402

EXTRAS = "piper,espeak,serve"
ENGINE = "piper"
SERVICES = ("scheduler", "worker-1", "worker-2", "serve")
POLL_S = 0.2


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def short_step(created_by: str) -> str:
    """A history step without buildah's ``|N ARG=...`` prefix and ``/bin/sh -c``, shortened."""
    text = " ".join(created_by.split())
    if "/bin/sh -c " in text:
        text = text.split("/bin/sh -c ", 1)[1]
    text = text.removeprefix("#(nop) ").removeprefix("set -eu; ")
    return text[:100]


def image_size(podman: Podman, image: str, base: str) -> dict:
    size = int(podman.json("image", "inspect", image)[0]["Size"])
    base_size = int(podman.json("image", "inspect", base)[0]["Size"])
    history = podman.json("history", "--format", "json", image) or []
    layers = []
    for h in history:
        n = h.get("size") if isinstance(h.get("size"), int) else parse_size(str(h.get("Size", "")))
        created_by = (h.get("createdBy") or h.get("CreatedBy") or "").strip()
        if n:
            layers.append({"bytes": int(n), "step": short_step(created_by)})
    layers.sort(key=lambda x: -x["bytes"])
    out = podman("run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c",
                 "du -sk /opt/e2a/lib/python3*/site-packages/* | sort -rn | head -n 12; "
                 "du -sk /opt/e2a | tail -n 1")  # fmt: skip
    rows = [line.split(None, 1) for line in out.splitlines() if line[:1].isdigit()]
    packages = [{"mb": round(int(k) / 1024, 1), "path": p.rsplit("/", 1)[-1]} for k, p in rows[:-1]]
    venv_mb = round(int(rows[-1][0]) / 1024, 1) if rows else None
    return {
        "image_bytes": size,
        "image_gb": round(size / 1e9, 3),
        "base_bytes": base_size,
        "venv_mb": venv_mb,
        "largest_layers": layers[:5],
        "largest_packages": packages,
    }


def run_job(server: ServerClient, upload_id: str, chapters: str, *, first_chunk_since=None):
    """Create a job and follow it to its end; (job, seconds, seconds to its first chunk)."""
    start = time.perf_counter()
    job = server.create_job([{"upload_id": upload_id, "chapters": chapters}], {"engine": ENGINE})
    first = None
    while True:
        j = server.job(job["id"])
        if first is None and j["progress"]["chunks_done"] >= 1:
            first = time.perf_counter() - (first_chunk_since or start)
        if j["state"] in FINAL_STATES:
            break
        time.sleep(POLL_S)
    wall = time.perf_counter() - start
    if j["state"] != "done":
        raise RuntimeError(f"job {chapters} ended {j['state']}: {j['books'][0].get('error')}")
    return j, wall, first


def containers_side(podman: Podman, image: str, work: Path, warm: str, chapters: str) -> dict:
    token = secrets.token_urlsafe(24)
    ports = {n: free_port() for n in ("SCHEDULER_PORT", "DASHBOARD_PORT", "SERVE_PORT")}
    env = {"E2A_IMAGE": image, "EBOOK2AUDIO_TOKEN": token, "BIND_ADDRESS": "127.0.0.1",
           "SCHEDULER": f"tcp://scheduler:{ports['SCHEDULER_PORT']}",
           **{k: str(v) for k, v in ports.items()}}  # fmt: skip
    compose = Compose(podman, work / "compose", f"e2abench{run_id()}", env)
    url = f"http://127.0.0.1:{ports['SERVE_PORT']}"
    try:
        t0 = time.perf_counter()
        compose("up", "-d", "--no-build", *SERVICES, timeout=600)
        up_returned = time.perf_counter() - t0
        with ServerClient(url, token=token, timeout=120) as server:
            wait_for(lambda: server.health()["connected"], 300, "the server connected", 0.2)
            server_ready = time.perf_counter() - t0
            upload = server.upload(SAMPLE)
            _, warm_s, first = run_job(server, upload["id"], warm, first_chunk_since=t0)
            log(f"containers: up to first chunk {first:.1f} s; warm-up job {warm_s:.1f} s")
            job, wall, _ = run_job(server, upload["id"], chapters)
            log(f"containers: chapters {chapters} in {wall:.1f} s")
            book = job["books"][0]
            name = next(f["name"] for f in book["files"] if f["kind"] == "report")
            server.download(job["id"], 0, name, str(work))
            report = json.loads((work / name).read_text())
        return {"up_returned_s": round(up_returned, 2), "server_ready_s": round(server_ready, 2),
                "up_to_first_chunk_s": round(first, 2), "warm_up_job_s": round(warm_s, 2),
                "job_s": round(wall, 2), "chunks": job["progress"]["chunks_total"],
                "chars": report["totals"]["chars"],
                "report_wall_s": report["totals"]["wall_s"]}  # fmt: skip
    finally:
        compose("down", "-v", timeout=300, check=False)
        label = f"label=io.podman.compose.project={compose.project}"
        nets = podman("network", "ls", "--quiet", "--filter", label, check=False).split()
        if nets:
            podman.remove_network(*nets)


def host_side(work: Path, warm: str, chapters: str) -> dict:
    token = secrets.token_urlsafe(24)
    server = ServerProcess(work / "host-data", "--workers", "2", "--engine-threads", "1",
                           token=token).start()  # fmt: skip
    try:
        with ServerClient(server.url, token=token, timeout=120) as client:
            upload = client.upload(SAMPLE)
            _, warm_s, _ = run_job(client, upload["id"], warm)
            job, wall, _ = run_job(client, upload["id"], chapters)
            log(f"host: chapters {chapters} in {wall:.1f} s (warm-up {warm_s:.1f} s)")
        return {"warm_up_job_s": round(warm_s, 2), "job_s": round(wall, 2),
                "chunks": job["progress"]["chunks_total"]}  # fmt: skip
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="chapter 2 timed, 3 as warm-up")
    args = parser.parse_args(argv)
    warm, chapters = ("3", "2") if args.quick else ("4", "2-3")
    podman = Podman()
    result: dict = {"engine": ENGINE, "extras": EXTRAS, "warm_up_chapters": warm,
                    "timed_chapters": chapters}  # fmt: skip
    try:
        with tempfile.TemporaryDirectory(prefix="e2a-bench-containers-") as tmp:
            work = Path(tmp)
            rid = run_id()
            t0 = time.perf_counter()
            base = podman.import_base(base_rootfs(log=log), f"localhost/e2a-bench-base:{rid}")
            context = build_context(work / "context")
            make_wheelhouse(context, EXTRAS, podman.image_python(base), log=log)
            t1 = time.perf_counter()
            image = build_image(podman, context, f"localhost/e2a-bench:{rid}", base,
                                extras=EXTRAS, log=log)  # fmt: skip
            result["build_s"] = round(time.perf_counter() - t1, 1)
            result["setup_s"] = round(t1 - t0, 1)
            result["size"] = image_size(podman, image, base)
            log(f"image: {result['size']['image_gb']} GB")
            result["containers"] = containers_side(podman, image, work, warm, chapters)
            result["host"] = host_side(work, warm, chapters)
    finally:
        problems = podman.destroy()
        if problems:
            log("cleanup problems: " + "; ".join(problems))
    result["chars"] = result["containers"]["chars"]
    result["ratio"] = round(result["containers"]["job_s"] / result["host"]["job_s"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
