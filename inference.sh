#!/usr/bin/env bash
# Generate videos for one backbone x method config through torchrun.
#
#   bash inference.sh <backbone> <method> [key=value ...]
#
#   backbone  causal_forcing | self_forcing | longlive | demo   (demo: tiny random weights, CPU, no downloads)
#   method    native | latentmem | infrope | deepforcing
#   key=value config overrides, e.g. num_output_frames=240 output_folder=videos/cf_60s
#
# Environment:
#   GPU=0,1        GPUs to use (CUDA_VISIBLE_DEVICES; GPUS= works too); default: all visible
#   NPROC=n        processes on this node (NGPU= works too); default: one per GPU, or 1 without a GPU (CPU, gloo)
#   PORT=p         rendezvous port; default: a free port
#   TORCHRUN_ARGS  extra torchrun flags for multi-node runs, e.g. "--nnodes 2 --node_rank 0 --master_addr host0"
#                  (set PORT to the same value on every node)
set -euo pipefail
cd "$(dirname "$0")"

source utils/grid_choice.sh
usage() { grid_usage inference.sh "GPU=0,1 (or GPUS=) NPROC=n (or NGPU=) PORT=p TORCHRUN_ARGS='...'"; }

if [[ $# -ge 1 && ( "$1" == "-h" || "$1" == "--help" ) ]]; then usage; exit 0; fi
if [[ $# -lt 2 ]]; then usage >&2; exit 2; fi
config=$(grid_config "$1" "$2")
shift 2

source utils/torchrun_launch.sh
launch_torchrun inference.py --config "$config" "$@"
