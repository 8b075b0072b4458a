#!/bin/sh
# Entrypoint of the ebook2audio_dask image (docs/deployment/containers.md).
#
#   scheduler [ARGS]   dask scheduler (port $SCHEDULER_PORT, dashboard $DASHBOARD_PORT)
#   worker [ARGS]      dask worker joining $SCHEDULER: one process, --resources for synthesis
#   serve [ARGS]       ebook2audio serve on $SERVE_PORT, on $SCHEDULER (embedded cluster if unset)
#   dask-scheduler ARGS, dask-worker ARGS
#                      the commands the Dask Helm chart and dask-kubernetes run: dask scheduler,
#                      dask worker with ARGS as given (a worker gets --resources as below
#                      unless ARGS have it)
#   healthcheck scheduler|worker|serve
#                      exit 0 when that process answers its health URL (compose healthchecks)
#   convert ... | inspect ... | engines ... | submit ... | report ... | cache ... | --help
#                      the ebook2audio command (convert gets --scheduler, as serve, when one is set)
#   anything else      run as a command (bash, python, dask, ...)
#
# Settings (environment; compose.yaml and .env.example list them):
#   SCHEDULER              the scheduler's address for workers, serve and convert (tcp://HOST:PORT,
#                          tls://...); when empty, $DASK_SCHEDULER_ADDRESS, else
#                          tcp://$SCHEDULER_HOST:$SCHEDULER_PORT if SCHEDULER_HOST is set; else
#                          workers use tcp://scheduler:8786, serve and convert an embedded cluster
#   E2A_LISTEN_HOST        address the processes bind inside the container (default: all)
#   SCHEDULER_PORT         8786;  DASHBOARD_PORT  8787 (scheduler dashboard, its /health)
#   WORKER_DASHBOARD_PORT  8789 (the worker's /health and metrics); WORKER_PORT  random
#   WORKER_MEMORY_LIMIT    dask worker --memory-limit (4GiB, 3g, auto, 0); default auto
#   E2A_WORKER_RESOURCES   the worker's --resources: "GPU=1" style, or "none" (parse, chunk and
#                          merge only). Unset: GPU=<slots> -- every worker takes synthesize
#                          tasks, which ask for ebook2audio.synthesize.resources (GPU: 1); on a
#                          CPU-only worker the name is only a tag
#   GPUS, NVIDIA_VISIBLE_DEVICES
#                          a GPU is given when either is set and not empty, void or none
#   E2A_SLOTS_PER_GPU      synthesize tasks a GPU worker runs at once (GPU=N, N threads); 1
#   E2A_WORKER_NTHREADS    worker threads (default: the GPU slots, else 1)
#   E2A_WORKER_NAME        the worker's name (default: the host name, uname -n)
#   SERVE_PORT             7860
#   EBOOK2AUDIO_TOKEN      the serve API token; or E2A_TOKEN_FILE (a file holding it; default
#                          /run/secrets/e2a_token when that exists)
set -eu

log() { echo "e2a-entrypoint: $*" >&2; }

scheduler_address() {
    if [ -n "${SCHEDULER:-}" ]; then
        echo "$SCHEDULER"
    elif [ -n "${DASK_SCHEDULER_ADDRESS:-}" ]; then # set by the dask-kubernetes operator
        echo "$DASK_SCHEDULER_ADDRESS"
    elif [ -n "${SCHEDULER_HOST:-}" ]; then
        echo "tcp://$SCHEDULER_HOST:${SCHEDULER_PORT:-8786}"
    fi
}

gpu_given() {
    for v in "${GPUS:-}" "${NVIDIA_VISIBLE_DEVICES:-}"; do
        case "$v" in
        "" | void | none | NONE | None) ;;
        *) return 0 ;;
        esac
    done
    return 1
}

token_file() {
    if [ -n "${E2A_TOKEN_FILE:-}" ]; then
        echo "$E2A_TOKEN_FILE"
    elif [ -f /run/secrets/e2a_token ]; then
        echo /run/secrets/e2a_token
    fi
}

healthcheck() {
    case "${1:-}" in
    scheduler) url="http://127.0.0.1:${DASHBOARD_PORT:-8787}/health" ;;
    worker) url="http://127.0.0.1:${WORKER_DASHBOARD_PORT:-8789}/health" ;;
    serve) url="http://127.0.0.1:${SERVE_PORT:-7860}/healthz" ;;
    *)
        log "healthcheck scheduler|worker|serve"
        exit 2
        ;;
    esac
    E2A_HEALTH_URL=$url E2A_HEALTH_TOKEN_FILE=$(token_file) exec python3 -c '
import os, sys, urllib.request
request = urllib.request.Request(os.environ["E2A_HEALTH_URL"])
token = os.environ.get("EBOOK2AUDIO_TOKEN", "")
path = os.environ.get("E2A_HEALTH_TOKEN_FILE", "")
if path:
    with open(path) as f:
        token = f.readline().strip()
if token:
    request.add_header("Authorization", "Bearer " + token)
try:
    with urllib.request.urlopen(request, timeout=5) as answer:
        sys.exit(0 if answer.status == 200 else 1)
except Exception as error:
    print(f"unhealthy: {error}", file=sys.stderr)
    sys.exit(1)
'
}

has_option() { # has_option NAME ARGS...: is --NAME (or --NAME=...) among ARGS
    name=$1
    shift
    for a in "$@"; do
        case "$a" in "--$name" | "--$name="*) return 0 ;; esac
    done
    return 1
}

cmd=${1:---help}
[ $# -gt 0 ] && shift

case "$cmd" in
scheduler)
    set -- --port "${SCHEDULER_PORT:-8786}" \
        --dashboard-address "${E2A_LISTEN_HOST:-}:${DASHBOARD_PORT:-8787}" "$@"
    if [ -n "${E2A_LISTEN_HOST:-}" ]; then set -- --host "$E2A_LISTEN_HOST" "$@"; fi
    log "dask scheduler $*"
    exec dask scheduler "$@"
    ;;
worker)
    scheduler=$(scheduler_address)
    scheduler=${scheduler:-tcp://scheduler:${SCHEDULER_PORT:-8786}}
    slots=1
    resources=${E2A_WORKER_RESOURCES-}
    if gpu_given; then
        slots=${E2A_SLOTS_PER_GPU:-1}
        log "GPU given (GPUS=${GPUS:-} NVIDIA_VISIBLE_DEVICES=${NVIDIA_VISIBLE_DEVICES:-})"
    fi
    if [ -z "${E2A_WORKER_RESOURCES+set}" ]; then resources="GPU=$slots"; fi
    set -- --nworkers 1 --nthreads "${E2A_WORKER_NTHREADS:-$slots}" \
        --name "${E2A_WORKER_NAME:-$(uname -n)}" \
        --memory-limit "${WORKER_MEMORY_LIMIT:-auto}" \
        --dashboard-address "${E2A_LISTEN_HOST:-}:${WORKER_DASHBOARD_PORT:-8789}" "$@"
    case "$resources" in
    "" | none | NONE) ;;
    *) set -- --resources "$resources" "$@" ;;
    esac
    if [ -n "${WORKER_PORT:-}" ]; then set -- --worker-port "$WORKER_PORT" "$@"; fi
    if [ -n "${E2A_LISTEN_HOST:-}" ]; then set -- --host "$E2A_LISTEN_HOST" "$@"; fi
    log "dask worker $scheduler $*"
    exec dask worker "$scheduler" "$@"
    ;;
serve)
    set -- --host "${E2A_LISTEN_HOST:-0.0.0.0}" --port "${SERVE_PORT:-7860}" "$@"
    scheduler=$(scheduler_address)
    if [ -n "$scheduler" ] && ! has_option scheduler "$@"; then
        set -- --scheduler "$scheduler" "$@"
    fi
    tf=$(token_file)
    if [ -n "$tf" ] && ! has_option token-file "$@"; then set -- --token-file "$tf" "$@"; fi
    log "ebook2audio serve $*"
    exec ebook2audio serve "$@"
    ;;
healthcheck)
    healthcheck "$@"
    ;;
dask-scheduler)
    exec dask scheduler "$@"
    ;;
dask-worker)
    resources=${E2A_WORKER_RESOURCES-GPU=1}
    case "$resources" in
    "" | none | NONE) ;;
    *) has_option resources "$@" || set -- "$@" --resources "$resources" ;;
    esac
    exec dask worker "$@"
    ;;
convert)
    scheduler=$(scheduler_address)
    if [ -n "$scheduler" ] && ! has_option scheduler "$@" && ! has_option slurm "$@" \
        && ! has_option cluster "$@" && ! has_option adapt "$@" && ! has_option workers "$@"; then
        set -- --scheduler "$scheduler" "$@"
    fi
    exec ebook2audio convert "$@"
    ;;
cache | engines | inspect | report | submit | -*)
    exec ebook2audio "$cmd" "$@"
    ;;
*)
    if command -v "$cmd" >/dev/null 2>&1; then exec "$cmd" "$@"; fi
    exec ebook2audio "$cmd" "$@"
    ;;
esac
