# Sourced by inference.sh, generate_latent.sh and train_ae_delta.sh: start a Python entry point
# under torchrun on this node.
#
#   launch_torchrun GPUS NPROC SCRIPT [ARGS ...]
#
#   GPUS   comma-separated GPU ids for CUDA_VISIBLE_DEVICES, or empty for all visible
#   NPROC  processes on this node, or empty for one per visible GPU (1 without a GPU: CPU, gloo)
# Environment: PORT (rendezvous port; default a free one; multi-node: the same value on every
# node) and TORCHRUN_ARGS (extra torchrun flags, e.g. "--nnodes 2 --node_rank 0 --master_addr host0").
launch_torchrun() {
    local gpus=$1 nproc=$2
    shift 2
    if [[ -n "$gpus" ]]; then
        export CUDA_VISIBLE_DEVICES=$gpus
    fi
    if [[ -z "$nproc" ]]; then
        nproc=$(python -c "import torch; print(max(torch.cuda.device_count(), 1))")
    fi
    local port=${PORT:-}
    if [[ -z "$port" ]]; then
        port=$(python -c "import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])")
    fi
    # shellcheck disable=SC2086  # TORCHRUN_ARGS is a list of flags
    exec python -m torch.distributed.run --nproc_per_node "$nproc" --master_port "$port" ${TORCHRUN_ARGS:-} "$@"
}
