#!/usr/bin/env bash
# Creates .venv (if missing) and installs logocap with its test dependencies.
# CPU machines: torch is pinned to the CPU wheel first so that pip never pulls a CUDA build.
# GPU users: install the torch build for your CUDA first (see README), then run this script;
# an already-installed torch is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/pip install -q "torch==${LOGOCAP_TORCH_VERSION:-2.13.0}" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -W ignore -c "import torch" # fail loudly if the install did not work
fi
.venv/bin/pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
# CrowdPose evaluation: xtcocotools' PyPI wheels break with numpy 2, so build it from source
# against the installed numpy (a few seconds).
if ! .venv/bin/python -c "import xtcocotools.cocoeval" >/dev/null 2>&1; then
  .venv/bin/pip install -q cython 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/pip install -q --no-build-isolation --no-binary xtcocotools xtcocotools 2>&1 \
    | grep -v "^WARNING: Location" || true
fi
.venv/bin/python -c "import logocap, cv2, pycocotools, yaml, tqdm, matplotlib, xtcocotools.cocoeval" # fail loudly
