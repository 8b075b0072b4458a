#!/usr/bin/env bash
# The fixed-cluster walkthrough (README.md) on this machine only: a `dask scheduler` and two
# `dask worker --resources GPU=1` processes on 127.0.0.1, then `ebook2audio convert
# --scheduler`. Everything is stopped when the script exits, however it exits.
#
#   examples/fixed_cluster/run_local.sh [BOOK [OUTPUT]]
#
# BOOK defaults to the sample book next to this folder, OUTPUT to ./out/fixed-cluster.
# Environment: PYTHON (interpreter with ebook2audio_dask, default python3), CHAPTERS (default
# 2, a short chapter of the sample book; "all" for the whole book), PORT (the scheduler's
# port, default a free one), WORKERS (default 2).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
book=${1:-$here/../childrens-literature.epub}
out=${2:-out/fixed-cluster}
PYTHON=${PYTHON:-python3}
CHAPTERS=${CHAPTERS:-2}
WORKERS=${WORKERS:-2}
PORT=${PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
scheduler=tcp://127.0.0.1:$PORT
logs=$out/logs
mkdir -p "$logs"

client_pid= scheduler_pid= worker_pids=()
running() {  # alive and not a zombie
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $state != Z* ]]
}
stop_all() {  # SIGTERM, then SIGKILL whatever is still there after 20 s
    local pid alive _
    [ $# -gt 0 ] || return 0
    kill "$@" 2>/dev/null || true
    for _ in $(seq 40); do
        alive=0
        for pid in "$@"; do running "$pid" && alive=1; done
        [ "$alive" = 1 ] || break
        sleep 0.5
    done
    kill -KILL "$@" 2>/dev/null || true
    wait "$@" 2>/dev/null || true
}
stop() {
    # the client, the workers (each nanny closes its worker cleanly while the scheduler
    # is still there), then the scheduler
    [ -z "$client_pid" ] || stop_all "$client_pid"
    stop_all "${worker_pids[@]}"
    [ -z "$scheduler_pid" ] || stop_all "$scheduler_pid"
    echo "stopped the scheduler and the workers (logs in $logs)"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Machine A: the scheduler (here on 127.0.0.1 only, at a fixed port).
"$PYTHON" -m dask scheduler --host 127.0.0.1 --port "$PORT" --dashboard-address 127.0.0.1:0 \
    >"$logs/scheduler.log" 2>&1 &
scheduler_pid=$!

# Machines B, C...: one worker per GPU, tagged GPU=1, one thread (it speaks one batch at a time).
for i in $(seq 0 $((WORKERS - 1))); do
    CUDA_VISIBLE_DEVICES=$i "$PYTHON" -m dask worker "$scheduler" --host 127.0.0.1 --name "gpu$i" \
        --resources GPU=1 --nthreads 1 --no-dashboard >"$logs/worker-gpu$i.log" 2>&1 &
    worker_pids+=($!)
done

"$PYTHON" - "$scheduler" "$WORKERS" <<'PY'
import sys
from distributed import Client

with Client(sys.argv[1], timeout=60) as client:
    client.wait_for_workers(int(sys.argv[2]), timeout=120)
    print(f"scheduler {sys.argv[1]}: {len(client.scheduler_info()['workers'])} workers, "
          f"dashboard {client.dashboard_link}", flush=True)
PY

# Anywhere: the client. The chunk store and the output must be reachable by every worker
# (on real machines: s3:// or a shared file system); here they are local folders.
chapters=()
[ "$CHAPTERS" != all ] && chapters=(--chapters "$CHAPTERS")
# (in the background, so that a signal to this script stops everything at once)
"$PYTHON" -m ebook2audio_dask convert "$book" -o "$out" --cache "$out/chunks" "${chapters[@]}" \
    --scheduler "$scheduler" --no-progress &
client_pid=$!
wait "$client_pid"  # its exit code is the script's
