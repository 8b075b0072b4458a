"""Convert ebooks with Dask workers that are SLURM jobs, started by dask-jobqueue.

Run it on a login node (or any machine that can ``sbatch``): the Dask scheduler
and this client stay here, and every worker is one SLURM job holding one GPU,
advertising the resource ``GPU=1`` that ebook2audio's synthesize tasks ask for.
Parse, chunk and merge tasks run on the same workers. The jobs are cancelled
when the script ends::

    python examples/slurm/jobqueue_convert.py library/ -o /shared/audiobooks \\
        --cache /shared/tts-cache --partition gpu --jobs 4 --cores 8 --memory 32GB

Needs ``pip install 'ebook2audio_dask[slurm]'`` (dask-jobqueue). The package's
own shortcut does the same from its ``ebook2audio.slurm`` config profile:
``ebook2audio convert library/ -o out/ --slurm`` (``--adapt 0:8`` to grow and
shrink with the work), or ``ebook2audio_dask.cluster.slurm_cluster()``.
"""

from __future__ import annotations

import argparse
import sys

from dask_jobqueue import SLURMCluster
from distributed import Client

import ebook2audio_dask as e2a


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "inputs",
        nargs="+",
        help="book files, folders or globs (paths every node can read, or s3://...)",
    )
    p.add_argument(
        "-o", "--output", required=True, help="output folder, on storage every node can write"
    )
    p.add_argument(
        "--cache", help="chunk store on storage every node can reach (default: ebook2audio.cache)"
    )
    p.add_argument(
        "--chapter",
        type=int,
        action="append",
        dest="chapters",
        metavar="N",
        help="convert only this chapter, as `ebook2audio inspect` numbers it (repeatable)",
    )
    g = p.add_argument_group("SLURM jobs (one Dask worker each)")
    g.add_argument("--partition", help="SLURM partition (-p)")
    g.add_argument("--account", help="SLURM account (-A)")
    g.add_argument("--jobs", type=int, default=2, help="worker jobs to start (default %(default)s)")
    g.add_argument(
        "--gpus-per-job",
        type=int,
        default=1,
        help="--gres=gpu:N per job; 0 for CPU-only voices (default %(default)s)",
    )
    g.add_argument(
        "--cores",
        type=int,
        default=4,
        help="CPUs per job, the engine's threads (default %(default)s)",
    )
    g.add_argument("--memory", default="16GB", help="memory per job (default %(default)s)")
    g.add_argument(
        "--walltime", default="02:00:00", help="time limit per job (default %(default)s)"
    )
    g.add_argument(
        "--interface", help="network interface the workers reach the scheduler on (e.g. ib0)"
    )
    g.add_argument("--log-directory", help="folder for the jobs' output files")
    g.add_argument(
        "--prologue",
        action="append",
        default=[],
        help="shell line run in each job before the worker (e.g. 'module load cuda'; repeatable)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cluster = SLURMCluster(
        queue=args.partition,
        account=args.account,
        cores=args.cores,
        processes=1,  # one worker per job, so one GPU per worker
        memory=args.memory,
        walltime=args.walltime,
        job_extra_directives=[f"--gres=gpu:{args.gpus_per_job}"] if args.gpus_per_job else [],
        # the tag synthesize tasks ask for (ebook2audio.synthesize.resources): one batch at a
        # time per worker, with the voice model kept loaded between batches
        worker_extra_args=["--resources", "GPU=1"],
        job_script_prologue=args.prologue,
        python=sys.executable,  # this environment: the same path must work on the compute nodes
        interface=args.interface,
        log_directory=args.log_directory,
        scheduler_options={"dashboard_address": ":0"},
    )
    print(cluster.job_script(), flush=True)
    with cluster, Client(cluster) as client:
        cluster.scale(jobs=args.jobs)
        print(f"dashboard: {client.dashboard_link}", flush=True)
        print("waiting for the first worker job to start (squeue --me)...", flush=True)
        client.wait_for_workers(1)  # a busy queue can take a while; later jobs join as they start
        try:
            results = e2a.convert(
                args.inputs,
                args.output,
                cache=args.cache,
                chapters=args.chapters,
                client=client,
                engine_threads=args.cores,
                slots=args.jobs,  # size the batches for every job, not only those already running
                progress=sys.stderr.isatty(),
            )
        except e2a.UsageError as exc:  # e.g. no book found, unknown engine
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
    for r in results:
        if r.ok:
            totals = r.report["totals"]
            print(
                f"done: {r.output} ({totals['audio_s'] / 60:.1f} min of audio, "
                f"{len(r.report['chunks_per_worker'])} workers)"
            )
        else:
            print(f"FAILED: {r.error}", file=sys.stderr)
    return max((r.exit_code for r in results), default=0)


if __name__ == "__main__":
    sys.exit(main())
