"""Fuzz the ingest layer with a given budget and count what happened.

    python benchmarks/bench_fuzz.py --examples 15000

Runs ``tests/test_fuzz.py`` (hypothesis; see its docstring for the
mutations) in a child pytest with ``E2A_FUZZ_EXAMPLES`` set (random inputs,
no example database) and ``E2A_FUZZ_COUNT_ONLY=1`` (an undocumented error is
counted, not the end of the run), then prints one JSON line: inputs tried,
books read, documented ``BookError`` s, undocumented errors by kind, the
slowest input, wall time.  Used by ``benchmarks/run.py --only fuzz``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(examples: int, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="e2a-fuzz-") as tmp:
        stats_path = Path(tmp) / "stats.json"
        env = dict(
            os.environ,
            E2A_FUZZ_EXAMPLES=str(examples),
            E2A_FUZZ_COUNT_ONLY="1",
            E2A_FUZZ_STATS=str(stats_path),
        )
        cmd = [
            sys.executable, "-m", "pytest", "tests/test_fuzz.py", "-q", "-p", "no:cacheprovider",
            "--basetemp", str(Path(tmp) / "pytest"), "-o", f"timeout={int(timeout)}",
        ]  # fmt: skip
        start = time.perf_counter()
        proc = subprocess.run(
            cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
        )
        wall = time.perf_counter() - start
        if not stats_path.exists():
            raise SystemExit(
                f"the fuzz test wrote no counts (exit {proc.returncode}):\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        stats = json.loads(stats_path.read_text())
    failures = stats.get("failures", {})
    return {
        "examples": examples,
        "inputs": stats["inputs"],
        "by_kind": stats["by_kind"],
        "books": stats["books"],
        "book_errors": stats["book_errors"],
        "undocumented_total": sum(failures.values()),
        "failures": failures,
        "catch_all": stats["catch_all"],
        "undocumented": stats["undocumented"],
        "hangs": stats["hangs"],
        "slow_inputs": stats["slow"],
        "max_seconds": stats["max_seconds"],
        "peak_rss_growth_mib": stats["peak_rss_growth_mib"],
        "problems": stats["problems"],
        "first_failures": stats["first_failures"],
        "pytest_exit": proc.returncode,
        "pytest_tail": proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else [],
        "wall_s": round(wall, 1),
        "inputs_per_s": round(stats["inputs"] / wall, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--examples", type=int, default=15000, help="inputs to try (default 15000)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds for the whole run")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.examples, args.timeout), ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
