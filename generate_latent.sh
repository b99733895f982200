#!/usr/bin/env bash
# Generate a latent corpus (training data of the retrieval AE) through torchrun.
#
#   bash generate_latent.sh [key=value ...]
#
#   key=value      config overrides, e.g. output_folder=latents/corpus sample_ratio=0.05
#
# Environment:
#   CONFIG=path    YAML config; default configs/generate_latent.yaml
#                  (configs/generate_latent_demo.yaml: tiny random CPU demo, no downloads)
#   NGPU=n         processes on this node (NPROC= works too): one per GPU; default all GPUs in GPUS (or all visible).
#                  Without a GPU: n CPU processes (gloo); default 1
#   GPUS=0,1       GPUs to use (CUDA_VISIBLE_DEVICES; GPU= works too); default: all visible
#   PORT=p         rendezvous port; default: a free port (multi-node: the same fixed value on every node)
#   TORCHRUN_ARGS  extra torchrun flags for multi-node runs, e.g. "--nnodes 2 --node_rank 0 --master_addr host0"
#                  (output_folder must be on a file system every node shares)
set -euo pipefail
cd "$(dirname "$0")"

if [[ $# -ge 1 && ( "$1" == "-h" || "$1" == "--help" ) ]]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 0
fi

CONFIG=${CONFIG:-configs/generate_latent.yaml}
source utils/torchrun_launch.sh
launch_torchrun generate_latent.py --config "$CONFIG" "$@"
