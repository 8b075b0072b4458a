#!/bin/sh
# Make the wheelhouse for an offline image build: every wheel the image installs, built or
# downloaded on this machine (which can reach PyPI), into ./wheels/ (the Containerfile's
# WHEELHOUSE). The image's Python must be the one running this (same minor version, a
# glibc at least as new): Debian bookworm's 3.11 for the default bases.
#
#   EXTRAS=piper,espeak,serve docker/wheelhouse.sh [DIR]
#   CONSTRAINTS=constraints.txt docker/wheelhouse.sh   # pin versions (e.g. `pip freeze` output)
#
# PYTHON_VERSION=3.11.2 (the image's Python, when older than this machine's: Debian bookworm
# has 3.11.2) adds what that version needs: a second pass downloads binary wheels for it
# (manylinux up to GLIBC_MAX, 2.36 on bookworm), reusing the wheels the first pass built.
#
# Coqui (EXTRAS=...,coqui) on CPU: put torch's CPU wheel in first, e.g.
#   python3 -m pip download --no-deps -d wheels torch --index-url https://download.pytorch.org/whl/cpu
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS:-piper,espeak,serve}
DIR=${1:-wheels}
mkdir -p "$DIR"
REQ=$(mktemp)
trap 'rm -f "$REQ"' EXIT
"$PYTHON" docker/requirements.py pyproject.toml "$EXTRAS" >"$REQ"
# the build backend, for the project's own install inside the image (no build isolation)
printf 'setuptools>=68\nwheel\n' >>"$REQ"
set -- --wheel-dir "$DIR" --find-links "$DIR" -r "$REQ"
if [ -n "${CONSTRAINTS:-}" ]; then set -- "$@" -c "$CONSTRAINTS"; fi
"$PYTHON" -m pip wheel "$@"
if [ -n "${PYTHON_VERSION:-}" ]; then
    arch=$(uname -m)
    glibc=${GLIBC_MAX:-2.36}
    set -- --dest "$DIR" --find-links "$DIR" --only-binary=:all: --python-version "$PYTHON_VERSION" \
        --implementation cp -r "$REQ"
    for tag in manylinux1 manylinux2010 manylinux2014 linux; do set -- "$@" --platform "${tag}_$arch"; done
    minor=5
    while [ "$minor" -le "${glibc#*.}" ]; do
        set -- "$@" --platform "manylinux_2_${minor}_$arch"
        minor=$((minor + 1))
    done
    "$PYTHON" -m pip download "$@"
fi
echo "wheelhouse: $(find "$DIR" -maxdepth 1 -name "*.whl" | wc -l) wheels in $DIR ($(du -sh "$DIR" | cut -f1))"
