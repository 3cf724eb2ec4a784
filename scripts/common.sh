# common.sh — helpers shared by the standard scripts; sourced, never run.
# shellcheck shell=bash
# Each script starts with:  . "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

export LC_ALL=C # '.' as decimal point in printf/awk, whatever the host locale

# Where the scripts read /proc and /etc files: other roots for tests (the
# agent's built-in checks are compared with the scripts on fixture trees).
proc_dir=${PIHEALTH_PROC_DIR:-/proc}
etc_dir=${PIHEALTH_ETC_DIR:-/etc}

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

# hottest_temp -> the hottest readable thermal zone in °C (2 decimals), or -
# Zones that cannot be read (some report EIO/ENODATA) are skipped.
hottest_temp() {
    local f t max=
    for f in "${PIHEALTH_THERMAL_DIR:-/sys/class/thermal}"/thermal_zone*/temp; do
        t=
        { read -r t <"$f"; } 2>/dev/null
        [[ $t =~ ^-?[0-9]+$ ]] || continue
        if [[ -z $max ]] || ((t > max)); then max=$t; fi
    done
    if [[ -n $max ]]; then
        awk -v m="$max" 'BEGIN { printf "%.2f\n", m / 1000 }'
    else
        echo -
    fi
}

# mem_usage -> "TOTAL_MIB USED_MIB USED_PCT", used = MemTotal - MemAvailable
# (what the kernel could not hand out without swapping). Kernels before 3.14
# have no MemAvailable: approximate it with free + buffers + cached.
mem_usage() {
    awk '
        $1 == "MemTotal:" { total = $2 }
        $1 == "MemAvailable:" { avail = $2; have = 1 }
        $1 == "MemFree:" || $1 == "Buffers:" || $1 == "Cached:" { approx += $2 }
        END {
            if (total <= 0) exit 1
            if (!have) avail = approx
            used = total - avail
            printf "%d %d %.2f\n", total / 1024, used / 1024, used * 100 / total
        }' "$proc_dir/meminfo"
}
