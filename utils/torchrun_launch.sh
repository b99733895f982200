# Sourced by inference.sh, evaluate.sh, generate_latent.sh and train_ae_delta.sh: start a Python entry point
# under torchrun on this node.
#
#   launch_torchrun SCRIPT [ARGS ...]
#
# Environment (each script accepts both spellings; setting both to different values is an error):
#   GPU or GPUS      comma-separated GPU ids for CUDA_VISIBLE_DEVICES; default: all visible
#   NPROC or NGPU    processes on this node; default: one per visible GPU (1 without a GPU: CPU, gloo)
#   PORT             rendezvous port; default: a free one (multi-node: the same value on every node)
#   TORCHRUN_ARGS    extra torchrun flags, e.g. "--nnodes 2 --node_rank 0 --master_addr host0"

# Print the value of whichever of two variables is set; fail naming both if they disagree.
_one_setting() {
    local first=$1 second=$2
    local a=${!first:-} b=${!second:-}
    if [[ -n "$a" && -n "$b" && "$a" != "$b" ]]; then
        echo "$first=$a and $second=$b disagree: they are two names of one setting; set one of them" >&2
        return 2
    fi
    echo "${a:-$b}"
}

launch_torchrun() {
    local gpus nproc
    gpus=$(_one_setting GPU GPUS) || exit 2
    nproc=$(_one_setting NPROC NGPU) || exit 2
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
    # a config error prints its one line and exits 2 here, instead of failing every worker under torchrun
    python "$@" --check-config >/dev/null || exit $?
    # exec: this shell's pid becomes torchrun's, so signals sent to the launcher reach torchrun, which
    # forwards SIGINT/SIGTERM to its workers. A SIGKILLed torchrun forwards nothing: every worker runs
    # through utils/parent_death.py, which has Linux stop it when torchrun dies.
    export LAUNCHER_AGENT_PID=$$
    # shellcheck disable=SC2086  # TORCHRUN_ARGS is a list of flags
    exec python -m torch.distributed.run --nproc_per_node "$nproc" --master_port "$port" ${TORCHRUN_ARGS:-} \
        -m utils.parent_death "$@"
}
