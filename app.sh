#!/usr/bin/env bash
# Serve the live app (app.py) for one backbone x method config: a local web page that streams the video
# while it is generated and takes new prompts on the fly. One process, one device.
#
#   bash app.sh <backbone> <method> [key=value ...]
#
#   backbone  causal_forcing | self_forcing | longlive | demo   (demo: tiny random weights, CPU, no downloads)
#   method    native | latentmem | infrope | deepforcing
#   key=value config overrides, e.g. num_output_frames=240 data_path=null 'prompts=["a fox running in snow"]'
#
# Environment:
#   PORT=p     port of the page; default 7860 (http://127.0.0.1:7860)
#   HOST=addr  address to listen on; default 127.0.0.1 (this machine only); 0.0.0.0 opens it to the network
#   GPU=0      the GPU to use (CUDA_VISIBLE_DEVICES; GPUS= works too); default: the first visible one
set -euo pipefail
cd "$(dirname "$0")"

source utils/grid_choice.sh
usage() { grid_usage app.sh "PORT=7860 HOST=127.0.0.1 GPU=0 (or GPUS=)"; }

if [[ $# -ge 1 && ( "$1" == "-h" || "$1" == "--help" ) ]]; then usage; exit 0; fi
if [[ $# -lt 2 ]]; then usage >&2; exit 2; fi
config=$(grid_config "$1" "$2")
shift 2

source utils/torchrun_launch.sh  # for _one_setting: GPU and GPUS are one setting, as in the other launchers
gpus=$(_one_setting GPU GPUS) || exit 2
if [[ -n "$gpus" ]]; then
    if [[ "$gpus" == *,* ]]; then
        echo "GPU=$gpus names several GPUs; the live app runs on one: set GPU to one id" >&2; exit 2
    fi
    export CUDA_VISIBLE_DEVICES=$gpus
fi
exec python app.py --config "$config" --host "${HOST:-127.0.0.1}" --port "${PORT:-7860}" "$@"
