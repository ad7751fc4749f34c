#!/usr/bin/env bash
# Creates bench/.venv (gitignored): the project + torch 2.13.0 + OpenCV 4.x headless, whose DNN module
# still has cv2.dnn.readNetFromDarknet (OpenCV 5 dropped the Darknet importer), as the reference runtime.
#
#   bash bench/setup_env.sh          # then: bench/.venv/bin/python bench/bench_inference.py
#
# The venv sees the system site-packages, so an installed torch 2.13.0 (CPU or CUDA build) is reused
# rather than downloaded again; its own opencv-python-headless 4.x shadows a system OpenCV 5.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x bench/.venv/bin/python ]; then
    "$PY" -m venv --system-site-packages bench/.venv
fi
bench/.venv/bin/python -m pip install --quiet --upgrade pip
bench/.venv/bin/python -m pip install --quiet -r bench/requirements.txt
bench/.venv/bin/python -m pip install --quiet --no-build-isolation -e .
bench/.venv/bin/python - <<'PY'
import cv2, torch, darknetpy
assert hasattr(cv2.dnn, "readNetFromDarknet"), f"OpenCV {cv2.__version__} has no Darknet importer"
print(f"bench/.venv ready: torch {torch.__version__}, OpenCV {cv2.__version__}, darknetpy {darknetpy.__version__}")
PY
