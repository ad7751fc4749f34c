#!/usr/bin/env bash
# The GPU check of issue 16 in one command: CPU-vs-CUDA losses, a 200-iteration AMP run with mAP,
# training and detect images/s, DDP on every GPU; one table. Under 10 minutes.
# Exit: 0 all passed, 1 a check failed, 3 no CUDA here (one line). See bench/gpu_check.py --help.
# Extra arguments go to bench/gpu_check.py (e.g. --cpu-dry-run on a machine without CUDA).
set -u
cd "$(dirname "$0")/.." || exit 2
exec timeout --signal=INT --kill-after=30 600 python3 bench/gpu_check.py "$@"
