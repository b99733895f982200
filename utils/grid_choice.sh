# Sourced by inference.sh and app.sh: the backbone x method grid of configs/ (configs/<backbone>_<method>.yaml).
#
#   grid_usage SCRIPT ENV_HELP     print the usage line with the valid names
#   grid_config BACKBONE METHOD    print the config path; an unknown name prints the valid ones and exits 2

GRID_BACKBONES=(causal_forcing self_forcing longlive demo)
GRID_METHODS=(native latentmem infrope deepforcing)

grid_usage() {
    echo "usage: bash $1 <backbone> <method> [key=value ...]"
    echo "  backbones: ${GRID_BACKBONES[*]}"
    echo "  methods:   ${GRID_METHODS[*]}"
    echo "  env:       $2"
}

_grid_one_of() {
    local value=$1; shift
    local item
    for item in "$@"; do [[ "$item" == "$value" ]] && return 0; done
    return 1
}

grid_config() {
    if ! _grid_one_of "$1" "${GRID_BACKBONES[@]}"; then
        echo "unknown backbone '$1'; valid backbones: ${GRID_BACKBONES[*]}" >&2; exit 2
    fi
    if ! _grid_one_of "$2" "${GRID_METHODS[@]}"; then
        echo "unknown method '$2'; valid methods: ${GRID_METHODS[*]}" >&2; exit 2
    fi
    echo "configs/$1_$2.yaml"
}
