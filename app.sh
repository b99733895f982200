#!/usr/bin/env bash
# Serve the live app (app.py) for one backbone x method config: a local web page that streams the video
# while it is generated and takes new prompts on the fly. One process, one device.
#
#   bash app.sh <backbone> <method> [key=value ...]
#
#   backbone  causal_forcing | self_forcing | longlive | demo   (demo: tiny random weights, CPU, no downloads)
#   method    native | latentmem | infrope | deepforcing
#   key=value config overrides, e.g. num_output_frames=240 'prompts=["a fox running in snow"]'
#
# Environment:
#   PORT=p     port of the page; default 7860 (http://127.0.0.1:7860)
#   HOST=addr  address to listen on; default 127.0.0.1 (this machine only); 0.0.0.0 opens it to the network
#   GPU=0      the GPU to use (CUDA_VISIBLE_DEVICES; GPUS= works too); default: the first visible one
set -euo pipefail
cd "$(dirname "$0")"

BACKBONES=(causal_forcing self_forcing longlive demo)
METHODS=(native latentmem infrope deepforcing)

usage() {
    echo "usage: bash app.sh <backbone> <method> [key=value ...]"
    echo "  backbones: ${BACKBONES[*]}"
    echo "  methods:   ${METHODS[*]}"
    echo "  env:       PORT=7860 HOST=127.0.0.1 GPU=0 (or GPUS=)"
}

one_of() {
    local value=$1; shift
    local item
    for item in "$@"; do [[ "$item" == "$value" ]] && return 0; done
    return 1
}

if [[ $# -ge 1 && ( "$1" == "-h" || "$1" == "--help" ) ]]; then usage; exit 0; fi
if [[ $# -lt 2 ]]; then usage >&2; exit 2; fi
backbone=$1
method=$2
shift 2
if ! one_of "$backbone" "${BACKBONES[@]}"; then
    echo "unknown backbone '$backbone'; valid backbones: ${BACKBONES[*]}" >&2; exit 2
fi
if ! one_of "$method" "${METHODS[@]}"; then
    echo "unknown method '$method'; valid methods: ${METHODS[*]}" >&2; exit 2
fi

if [[ -n "${GPU:-}" && -n "${GPUS:-}" && "$GPU" != "$GPUS" ]]; then
    echo "GPU=$GPU and GPUS=$GPUS disagree: they are two names of one setting; set one of them" >&2; exit 2
fi
gpus=${GPU:-${GPUS:-}}
if [[ -n "$gpus" ]]; then
    if [[ "$gpus" == *,* ]]; then
        echo "GPU=$gpus names several GPUs; the live app runs on one: set GPU to one id" >&2; exit 2
    fi
    export CUDA_VISIBLE_DEVICES=$gpus
fi
exec python app.py --config "configs/${backbone}_${method}.yaml" --host "${HOST:-127.0.0.1}" --port "${PORT:-7860}" "$@"
