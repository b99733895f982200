#!/usr/bin/env bash
# Score inference run folders through torchrun: Table 2, drift metrics, retrieval diagnostics.
#
#   bash evaluate.sh <run_folder> [<run_folder> ...] [key=value ...]
#
#   run_folder  an inference output folder (with summary.json), e.g. videos/demo/native
#   key=value   overrides of configs/evaluate.yaml, e.g. output_folder=reports/demo vbench.mode=skip
#
# Environment:
#   CONFIG=...     the YAML (default configs/evaluate.yaml)
#   GPU=0,1        GPUs to use (CUDA_VISIBLE_DEVICES; GPUS= works too); default: all visible
#   NPROC=n        processes on this node (NGPU= works too); default: one per GPU, or 1 without a GPU (CPU, gloo)
#   PORT=p         rendezvous port; default: a free port
#   TORCHRUN_ARGS  extra torchrun flags for multi-node runs, e.g. "--nnodes 2 --node_rank 0 --master_addr host0"
set -euo pipefail
cd "$(dirname "$0")"

if [[ $# -ge 1 && ( "$1" == "-h" || "$1" == "--help" ) ]]; then
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
if [[ $# -lt 1 ]]; then
    echo "usage: bash evaluate.sh <run_folder> [<run_folder> ...] [key=value ...]   (--help for more)" >&2; exit 2
fi

source utils/torchrun_launch.sh
launch_torchrun evaluate.py --config "${CONFIG:-configs/evaluate.yaml}" "$@"
