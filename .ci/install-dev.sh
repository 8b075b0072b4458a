#!/usr/bin/env bash
# Development install into the virtual environment $1 (default .venv):
# the package with its test extras, torch and coqui-tts for the Coqui tests, and
# (as root, through apt-get) Debian's SLURM + munge for the SLURM tests.
set -euo pipefail
venv="${1:-.venv}"
py="$venv/bin/python"
pip=("$py" -m pip install --disable-pip-version-check)

# torch first, pinned: on the project's CI machine this is a local CPU wheel
# (any other spec downloads GBs of CUDA wheels). Elsewhere it is PyPI's torch.
"${pip[@]}" "torch==2.13.0"
"${pip[@]}" -e ".[dev,coqui]"
# coqui-tts imports torchaudio (and its I/O backend torchcodec) without declaring
# them; --no-deps keeps the torch above.
"${pip[@]}" --no-deps torchaudio torchcodec
# Where PyPI's torchaudio is a CUDA build that cannot load next to a CPU torch,
# drop its native libraries: the pure-Python parts Coqui inference uses
# (resampling, mel spectrograms) still work; torchaudio.load is never used.
if ! "$py" -c "import torchaudio" >/dev/null 2>&1; then
    lib="$("$py" -c 'import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec("torchaudio").origin), "lib"))')"
    echo "install-dev: torchaudio's native libraries do not load here; using its pure-Python parts" >&2
    rm -f "$lib"/*.so
fi
"$py" -c "import TTS.api, torch; print('install-dev: torch', torch.__version__, '+ coqui-tts ready')"

# moto's S3 server for tests/test_s3.py, installed on its own with botocore held at
# the version s3fs's aiobotocore pins (one resolve with everything backtracks for long).
botocore="$("$py" -c 'import importlib.metadata as m; print(m.version("botocore"))')"
"${pip[@]}" "moto[server]>=5" "botocore==$botocore"

# A real SLURM for tests/test_slurm.py (Debian packages; the test starts and stops
# a one-node slurmctld/slurmd itself). Needs root and apt-get.
if ! command -v slurmctld >/dev/null 2>&1 && [ ! -x /usr/sbin/slurmctld ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        pkgs=(slurmctld slurmd slurm-client munge)
        apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null \
            || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null; }
        echo "install-dev: SLURM $(/usr/sbin/slurmctld -V 2>/dev/null) + munge installed"
    else
        echo "install-dev: SLURM not installed (needs root and apt-get): tests/test_slurm.py will skip, or fail under CI" >&2
    fi
fi

# Calibre's ebook-convert for the MOBI/AZW3/DOCX/RTF/ODT tests in tests/test_formats.py
# (Debian package; the tests skip without it, or fail under CI). Needs root and apt-get.
if ! command -v ebook-convert >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q --no-install-recommends calibre >/dev/null \
            || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends calibre >/dev/null; }
        echo "install-dev: $(ebook-convert --version 2>/dev/null | head -n 1) installed"
    else
        echo "install-dev: Calibre not installed (needs root and apt-get): its tests in tests/test_formats.py will skip, or fail under CI" >&2
    fi
fi
