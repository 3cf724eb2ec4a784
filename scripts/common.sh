# common.sh — helpers shared by the standard scripts; sourced, never run.
# shellcheck shell=bash
# Each script starts with:  . "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

export LC_ALL=C # '.' as decimal point in printf/awk, whatever the host locale

die() { echo "${0##*/}: $*" >&2; exit 2; }

# number NAME DEFAULT: value of env var NAME (DEFAULT when unset or empty).
number() {
    local v=${!1:-$2}
    [[ $v =~ ^[0-9]+([.][0-9]+)?$ ]] || die "$1='$v' is not a non-negative number"
    printf '%s\n' "$v"
}

# level VALUE NOTE WARNING -> normal | note | warning  (awk: thresholds may be fractional)
level() {
    awk -v v="$1" -v n="$2" -v w="$3" \
        'BEGIN { print (v + 0 >= w + 0) ? "warning" : (v + 0 >= n + 0) ? "note" : "normal" }'
}
