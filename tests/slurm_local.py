"""A real single-node SLURM on 127.0.0.1 for the tests: munged, slurmctld and slurmd.

Debian's ``slurmctld slurmd slurm-client munge`` packages are installed by
``.ci/install-dev.sh`` (as root).  :func:`local_slurm` writes a ``slurm.conf``
for this machine (one node, its CPUs and memory, two fake GPUs through a
``gres.conf`` whose device files are symlinks to ``/dev/null``), starts the
three daemons in the foreground as child processes, waits until the node is
idle, and on exit cancels every job and stops the daemons.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")

CONF = """\
ClusterName=e2a
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
GresTypes=gpu
MpiDefault=none
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def missing() -> list[str]:
    """The SLURM/munge programs this machine lacks."""
    return [b for b in BINARIES if not (shutil.which(b) or Path("/usr/sbin", b).exists())]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    tails = "\n".join(
        f"--- {p}\n{p.read_text(errors='replace')[-2000:]}" for p in logs if p.exists()
    )
    raise TimeoutError(f"SLURM: timed out waiting for {what}\n{tails}")


@contextlib.contextmanager
def local_slurm(folder: Path) -> Iterator[dict[str, str]]:
    """Run a one-node SLURM; yield the environment (``SLURM_CONF``) its commands need."""
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool", "gpus"):
        (folder / sub).mkdir(exist_ok=True)
    for i in (0, 1):
        link = folder / "gpus" / f"sgpu{i}"
        if not link.exists():
            link.symlink_to("/dev/null")
    mem_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
    conf = folder / "slurm.conf"
    conf.write_text(CONF.format(d=folder, cpus=os.cpu_count() or 1, mem=mem_mb,
                                ctld_port=_free_port(), d_port=_free_port()))  # fmt: skip
    (folder / "gres.conf").write_text(f"NodeName=localhost Name=gpu File={folder}/gpus/sgpu[0-1]\n")
    env = dict(os.environ, SLURM_CONF=str(conf))
    procs: list[subprocess.Popen] = []
    logs = [folder / "slurmctld.log", folder / "slurmd.log", folder / "munged.log"]
    munge_dirs = [Path("/run/munge"), Path("/var/lib/munge"), Path("/var/log/munge")]
    try:
        for d in munge_dirs:
            d.mkdir(parents=True, exist_ok=True)
            shutil.chown(d, "munge", "munge")
        socket = Path("/run/munge/munge.socket.2")
        if not socket.exists():
            procs.append(
                subprocess.Popen(
                    [
                        "runuser",
                        "-u",
                        "munge",
                        "--",
                        shutil.which("munged") or "/usr/sbin/munged",
                        "-F",
                    ],
                    stdout=open(folder / "munged.log", "w"),  # noqa: SIM115 - the daemon's log
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            _wait(socket.exists, 30, "munged", logs)
        procs.append(subprocess.Popen(
            ["/usr/sbin/slurmctld", "-D", "-c", "-f", str(conf)], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        ))  # fmt: skip
        procs.append(subprocess.Popen(
            ["/usr/sbin/slurmd", "-D", "-c", "-N", "localhost", "-f", str(conf)], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        ))  # fmt: skip

        def idle() -> bool:
            out = subprocess.run(
                ["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True
            )
            return out.returncode == 0 and out.stdout.strip() in ("idle", "mixed")

        _wait(idle, 60, "the node to be idle", logs)
        yield env
    finally:
        subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True, timeout=30)
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
