#!/usr/bin/env bash
# Train the retrieval autoencoder through torchrun (DDP via accelerate; one process per GPU).
#
#   bash train_ae_delta.sh [key=value ...]
#
#   key=value      config overrides, e.g. data_dir=latents/corpus epochs=100 output_dir=runs/ae_delta
#
# Environment:
#   CONFIG=path    YAML config; default ae/configs/ae_delta.yaml
#                  (ae_only_paper.yaml / ae_only_reference.yaml: AE only; toy_*.yaml: CPU toy runs)
#   GPU=0,1        GPUs to use (CUDA_VISIBLE_DEVICES; GPUS= works too); default: all visible
#   NPROC=n        processes on this node (NGPU= works too); default: one per GPU, or 1 without a GPU (CPU, gloo)
#   PORT=p         rendezvous port; default: a free port
#   TORCHRUN_ARGS  extra torchrun flags for multi-node runs, e.g. "--nnodes 2 --node_rank 0 --master_addr host0"
#                  (set PORT to the same value on every node)
set -euo pipefail
cd "$(dirname "$0")"

if [[ $# -ge 1 && ( "$1" == "-h" || "$1" == "--help" ) ]]; then
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi

CONFIG=${CONFIG:-ae/configs/ae_delta.yaml}
source utils/torchrun_launch.sh
launch_torchrun train_ae_delta.py --config "$CONFIG" "$@"
