"""Real containers for tests/test_containers.py and benchmarks/bench_containers.py (podman).

Everything runs in an *isolated* podman: :class:`Podman` points ``CONTAINERS_CONF`` and
``CONTAINERS_STORAGE_CONF`` at files of its own folder, so its images, containers,
volumes, networks (CNI configuration) and events live there and nowhere else. Nothing
of another podman user on the machine is seen or touched, and :meth:`Podman.destroy`
removes everything the run made by removing that folder (after stopping and removing
its containers, pods, volumes and networks, so that no process, mount, bridge or
firewall rule is left behind).

The recipe is the one of ``../shared/notes/findings.md`` ("Containers work here with
podman"): runc with the cgroupfs manager (crun refuses this machine's hybrid cgroups),
``default_ulimits = []`` (the default ulimits are refused), a base image made from
Debian packages with mmdebstrap (no registry is reachable) and a wheelhouse made on the
host (PyPI is not reachable from inside the containers): the image's build runs with
``--network none``.

What cannot work here raises :class:`ContainerSetupError` with the exact reason; the
test turns it into ``pytest.fail`` (never a skip).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "childrens-literature.epub"

#: Debian packages of the base image (a Debian bookworm minbase, like python:3.11-slim).
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip")
BASE_SUITE = "bookworm"
#: The base image's root file system, made once by mmdebstrap and kept (reruns import it).
BASE_CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "ebook2audio_dask"
    / "containers"
    / f"debian-{BASE_SUITE}-{'-'.join(BASE_PACKAGES)}-minbase.tar"
)
#: The Python that makes the wheelhouse: Debian bookworm's own, the base image's version.
HOST_PYTHON = "/usr/bin/python3"
#: Files of the working tree the image's build context holds (see .dockerignore).
CONTEXT_FILES = ("Containerfile", ".dockerignore", "pyproject.toml", "README.md")
CONTEXT_DIRS = ("ebook2audio_dask", "docker")
#: Programs the containers need on the host.
PROGRAMS = ("podman", "podman-compose", "mmdebstrap", "runc")

__all__ = [
    "BASE_CACHE",
    "SAMPLE",
    "Compose",
    "ContainerSetupError",
    "Podman",
    "base_rootfs",
    "build_context",
    "build_image",
    "make_wheelhouse",
    "missing_programs",
    "run_id",
]


class ContainerSetupError(RuntimeError):
    """A step of the container set-up failed; the message says which and why."""


def run_id() -> str:
    """A short id unique to this run (names, tags, compose project)."""
    return uuid.uuid4().hex[:8]


def missing_programs() -> list[str]:
    """The programs of :data:`PROGRAMS` that are not installed."""
    return [p for p in PROGRAMS if not (shutil.which(p) or Path("/usr/sbin", p).exists())]


def _run(cmd: Sequence[str], *, env=None, timeout: float = 900, cwd=None, what: str = "",
         check: bool = True) -> subprocess.CompletedProcess:  # fmt: skip
    try:
        proc = subprocess.run(list(cmd), env=env, cwd=cwd, timeout=timeout, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode()
        raise ContainerSetupError(
            f"{what or cmd[0]}: no answer within {timeout:g} s: {' '.join(cmd)}\n{out[-4000:]}"
        ) from None
    if check and proc.returncode != 0:
        raise ContainerSetupError(
            f"{what or cmd[0]} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"{proc.stdout[-6000:]}"
        )
    return proc


def base_rootfs(path: Path = BASE_CACHE, *, log=print) -> Path:
    """The base image's root file system as a tar, made by mmdebstrap when not cached.

    ``mmdebstrap --variant=minbase --include=python3,python3-venv,python3-pip bookworm``:
    Debian packages from the Debian mirror apt uses, no image registry. Made under a
    temporary name and renamed, so an interrupted run leaves no half tar behind.
    """
    if path.is_file() and path.stat().st_size > 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # mmdebstrap picks the output's format by its name: keep ".tar" at the end
    part = path.with_name(f".part-{os.getpid()}-{path.name}")
    log(f"containers: making the base root file system with mmdebstrap into {path}")
    try:
        _run(["nice", "-n", "10", "mmdebstrap", "--variant=minbase", "--quiet",
              f"--include={','.join(BASE_PACKAGES)}", BASE_SUITE, str(part)],
             timeout=900, what="mmdebstrap (the base image's Debian packages)")  # fmt: skip
        if not part.is_file():
            raise ContainerSetupError(f"mmdebstrap wrote no tar at {part}")
        part.replace(path)
    finally:
        if part.is_dir():
            shutil.rmtree(part, ignore_errors=True)
        else:
            part.unlink(missing_ok=True)
    return path


class Podman:
    """An isolated podman: storage, volumes, networks and run state under *root*.

    Parameters
    ----------
    root : Path, optional
        Its folder (created; default a new one under /tmp, short, since conmon's socket
        paths are limited to ~100 characters).
    """

    def __init__(self, root: Path | None = None):
        self.root = Path(root or tempfile.mkdtemp(prefix="e2a-pm-", dir="/tmp"))
        self.root.mkdir(parents=True, exist_ok=True)
        r = self.root
        (r / "containers.conf").write_text(
            "[containers]\n"
            "default_ulimits = []\n"
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{r}/events.log"\n'
            f'tmp_dir = "{r}/tmp"\n'
            f'static_dir = "{r}/libpod"\n'
            f'volume_path = "{r}/volumes"\n'
            "[network]\n"
            f'network_config_dir = "{r}/cni"\n'
        )
        (r / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{r}/graph"\nrunroot = "{r}/run"\n'
        )
        self.env = dict(os.environ)
        self.env.update(
            CONTAINERS_CONF=str(r / "containers.conf"),
            CONTAINERS_STORAGE_CONF=str(r / "storage.conf"),
        )
        # the bridges of this podman's networks: CNI's dnsname plugin adds a firewall rule
        # for each (DNS queries from the containers) and leaves it when the network goes
        self._bridges: set[str] = set()

    def __call__(self, *args: str, timeout: float = 300, check: bool = True,
                 what: str = "") -> str:  # fmt: skip
        """``podman ARGS`` in this podman; its output (stdout and stderr)."""
        return _run(["podman", *args], env=self.env, timeout=timeout, check=check,
                    what=what or f"podman {args[0]}").stdout  # fmt: skip

    def json(self, *args: str, timeout: float = 120) -> object:
        out = _run(["podman", *args], env=self.env, timeout=timeout, what=f"podman {args[0]}")
        return json.loads(out.stdout or "null")

    def import_base(self, tar: Path, tag: str) -> str:
        """Import the mmdebstrap root file system as image *tag*."""
        self("import", "--quiet", "--change", "CMD [\"/bin/sh\"]", str(tar), tag,
             what="podman import (the base image)")  # fmt: skip
        return tag

    def image_python(self, image: str) -> str:
        """``X.Y.Z`` of the image's python3."""
        out = self("run", "--rm", "--network", "none", "--entrypoint", "python3", image, "-c",
                   "import platform; print(platform.python_version())",
                   what="python3 in the base image")  # fmt: skip
        return out.strip().splitlines()[-1]

    def ids(self, kind: str) -> list[str]:
        """Every container/pod/volume/network/image id or name of this podman."""
        fmt = {"ps": "{{.ID}}", "pod": "{{.ID}}", "volume": "{{.Name}}",
               "network": "{{.Name}}", "images": "{{.ID}}"}[kind]  # fmt: skip
        args = {"ps": ["ps", "-a"], "pod": ["pod", "ps"], "volume": ["volume", "ls"],
                "network": ["network", "ls"], "images": ["images", "-a"]}[kind]  # fmt: skip
        out = self(*args, "--format", fmt, check=False, timeout=120)
        return [line.strip() for line in out.splitlines() if line.strip()]

    def destroy(self) -> list[str]:
        """Remove every container, pod, volume, network and image, then the folder.

        Returns the problems met (empty when everything went); never raises, so that a
        test's own failure is what it reports.
        """
        problems: list[str] = []

        def attempt(*args: str) -> None:
            try:
                self(*args, timeout=180)
            except ContainerSetupError as exc:
                problems.append(str(exc).splitlines()[0])

        if (self.root / "containers.conf").exists():
            if self.ids("ps"):
                attempt("rm", "--all", "--force", "--time", "0")
            if self.ids("pod"):
                attempt("pod", "rm", "--all", "--force")
            if self.ids("volume"):
                attempt("volume", "rm", "--all", "--force")
            nets = [n for n in self.ids("network") if n != "podman"]
            if nets:
                self._bridges.update(self.bridges(nets))
                attempt("network", "rm", "--force", *nets)
            if self.ids("images"):
                attempt("rmi", "--all", "--force")
        self._drop_input_rules()
        mounts = [
            line.split()[1]
            for line in Path("/proc/self/mounts").read_text().splitlines()
            if len(line.split()) > 1 and line.split()[1].startswith(str(self.root) + "/")
        ]
        for m in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
        if self.root.exists():
            problems.append(f"{self.root} could not be removed")
        return problems

    # -- the firewall rules of CNI's dnsname plugin ------------------------------------
    @staticmethod
    def _iptables_input() -> list[str]:
        if not shutil.which("iptables"):
            return []
        proc = subprocess.run(["iptables", "-S", "INPUT"], capture_output=True, text=True,
                              check=False)  # fmt: skip
        return [line for line in proc.stdout.splitlines() if line.startswith("-A INPUT")]

    def bridges(self, networks: Iterable[str]) -> set[str]:
        """The host interfaces (bridges) of *networks*."""
        found = set()
        for net in networks:
            out = self("network", "inspect", "--format", "{{.NetworkInterface}}", net,
                       check=False, timeout=60)  # fmt: skip
            found.update(w for w in out.split() if w.startswith("cni-"))
        return found

    def remove_network(self, *names: str) -> None:
        """``podman network rm`` (and the DNS firewall rules of their bridges)."""
        self._bridges.update(self.bridges(names))
        self("network", "rm", "--force", *names, check=False)
        self._drop_input_rules()

    def _drop_input_rules(self) -> None:
        """Delete the INPUT rules for DNS on the bridges of this podman's networks."""
        for rule in self._iptables_input():
            words = rule.split()
            if (
                "--dport" in words
                and words[words.index("--dport") + 1] == "53"
                and any(f"-i {b} " in rule + " " for b in self._bridges)
            ):
                subprocess.run(["iptables", "-D", *words[1:]], capture_output=True, check=False)


def build_context(dest: Path) -> Path:
    """A copy of the working tree's build context (the Containerfile's inputs) in *dest*.

    The image is built from this copy, so the test never writes into the working tree
    (its ``wheels/`` folder in particular).
    """
    dest.mkdir(parents=True, exist_ok=True)
    for name in CONTEXT_FILES:
        if not (ROOT / name).is_file():
            raise ContainerSetupError(f"{ROOT / name} is missing: the image cannot be built")
        shutil.copy2(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
    for name in CONTEXT_DIRS:
        shutil.copytree(ROOT / name, dest / name, ignore=ignore, dirs_exist_ok=True)
    (dest / "wheels").mkdir(exist_ok=True)
    return dest


def make_wheelhouse(context: Path, extras: str, python_version: str, *, log=print) -> Path:
    """Fill ``context/wheels`` with docker/wheelhouse.sh, run by the host's Debian Python.

    The wheels must suit the image's Python: :data:`HOST_PYTHON` (Debian bookworm's, the
    base image's) makes them, and must have the same version as the image's
    (*python_version*).
    """
    if not Path(HOST_PYTHON).exists():
        raise ContainerSetupError(f"{HOST_PYTHON} (Debian's Python, for the wheelhouse) is missing")
    host = _run([HOST_PYTHON, "-c", "import platform; print(platform.python_version())"],
                what="host Python").stdout.strip()  # fmt: skip
    if host.split(".")[:2] != python_version.split(".")[:2] or host != python_version:
        raise ContainerSetupError(
            f"the wheelhouse needs a host Python of the image's version {python_version}; "
            f"{HOST_PYTHON} is {host}"
        )
    _run([HOST_PYTHON, "-m", "pip", "--version"], what=f"pip of {HOST_PYTHON} (python3-pip)")
    wheels = context / "wheels"
    env = dict(os.environ, PYTHON=HOST_PYTHON, EXTRAS=extras)
    env.pop("PIP_REQUIRE_VIRTUALENV", None)
    t0 = time.monotonic()
    out = _run(["nice", "-n", "10", "sh", str(context / "docker" / "wheelhouse.sh"), str(wheels)],
               env=env, cwd=context, timeout=1800,
               what="docker/wheelhouse.sh (pip wheel on the host)").stdout  # fmt: skip
    n = len(list(wheels.glob("*.whl")))
    if not n:
        raise ContainerSetupError(f"docker/wheelhouse.sh made no wheel:\n{out[-3000:]}")
    log(f"containers: wheelhouse of {n} wheels in {time.monotonic() - t0:.1f} s")
    return wheels


def build_image(podman: Podman, context: Path, tag: str, base: str, *, extras: str,
                log=print, timeout: float = 1800) -> str:  # fmt: skip
    """``podman build`` of the Containerfile, offline (``--network none``), from the wheelhouse."""
    t0 = time.monotonic()
    podman("build", "--network", "none", "--pull=never", "--build-arg", f"BASE={base}",
           "--build-arg", f"EXTRAS={extras}", "--build-arg", "WHEELHOUSE=wheels",
           "--tag", tag, "--file", str(context / "Containerfile"), str(context),
           timeout=timeout, what="podman build (the Containerfile, offline)")  # fmt: skip
    log(f"containers: image {tag} built in {time.monotonic() - t0:.1f} s")
    return tag


class Compose:
    """``podman-compose`` on a copy of compose.yaml, with a ``.env`` the caller writes.

    Parameters
    ----------
    podman : Podman
        The isolated podman it runs in (``podman-compose`` calls ``podman`` from
        ``PATH`` with this podman's environment).
    folder : Path
        Where compose.yaml is copied with *overrides* and the ``.env`` file: relative
        paths in it resolve there, not in the working tree.
    project : str
        The compose project name (unique per run).
    env : dict
        Written to ``folder/.env`` (the compose variables).
    overrides : iterable of str
        More compose files' text, applied after compose.yaml in order.
    """

    def __init__(self, podman: Podman, folder: Path, project: str, env: dict[str, str],
                 overrides: Iterable[str] = ()):  # fmt: skip
        self.podman = podman
        self.folder = folder
        self.project = project
        folder.mkdir(parents=True, exist_ok=True)
        src = ROOT / "compose.yaml"
        if not src.is_file():
            raise ContainerSetupError(f"{src} is missing: nothing to bring up")
        shutil.copy2(src, folder / "compose.yaml")
        self.files = [folder / "compose.yaml"]
        for i, text in enumerate(overrides):
            path = folder / f"compose.test-{i}.yaml"
            path.write_text(text)
            self.files.append(path)
        (folder / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        self.env = dict(podman.env)
        self.env.update(env)

    def __call__(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        files = [a for f in self.files for a in ("-f", str(f))]
        return _run(["podman-compose", "-p", self.project, *files, *args], env=self.env,
                    cwd=self.folder, timeout=timeout, check=check,
                    what=f"podman-compose {args[0]}").stdout  # fmt: skip

    def containers(self, service: str | None = None, *, all: bool = True) -> list[dict]:
        """The project's containers (``podman ps --format json``), of *service* if given."""
        label = f"label=io.podman.compose.project={self.project}"
        args = ["ps", "--format", "json", "--filter", label]
        if all:
            args.insert(1, "--all")
        if service:
            args += ["--filter", f"label=com.docker.compose.service={service}"]
        return list(self.podman.json(*args) or [])

    def logs(self, tail: int = 60) -> str:
        """The last *tail* lines of every container's log (for failure messages)."""
        parts = []
        for c in self.containers():
            name = c["Names"][0] if isinstance(c.get("Names"), list) else c.get("Names")
            out = self.podman("logs", "--tail", str(tail * 4), name, check=False, timeout=60)
            # the server's access log of the test's own polling says nothing
            lines = [x for x in out.splitlines() if '"GET /api/' not in x]
            out = "\n".join(lines[-tail:])
            parts.append(f"--- {name} ({c.get('State')}, {c.get('Status', '')})\n{out}")
        return "\n".join(parts)

    def volume_path(self, name: str) -> Path:
        """Where the project's volume *name* (as compose.yaml names it) lies on the host."""
        full = f"{self.project}_{name}"
        data = self.podman.json("volume", "inspect", full)
        return Path(data[0]["Mountpoint"])


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    """Poll *predicate* until it returns something true; its value. Fails after *timeout*."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - retried until the deadline, then reported
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:g} s (last error: {last_exc!r})")


def du(path: Path) -> int:
    """Bytes of the regular files under *path*."""
    total = 0
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


def parse_size(text: str) -> float:
    """``887 MB`` / ``1.2GB`` / ``12.3kB`` (podman's units, powers of 1000) in bytes."""
    m = re.match(r"\s*([\d.]+)\s*([kMGT]?B)", text)
    if not m:
        return 0.0
    unit = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}[m.group(2)]
    return float(m.group(1)) * unit


if __name__ == "__main__":  # python tests/containers.py: make the cached base root fs
    print(base_rootfs())
    sys.exit(0)
