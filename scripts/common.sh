# common.sh — helpers shared by the standard scripts; sourced, never run.
# shellcheck shell=sh
# Each script starts with:  . "$(dirname -- "$0")/common.sh"
#
# The scripts are POSIX sh (bash, dash and busybox ash run them) and call
# only tools busybox has: awk, cat, df, ls, od, sleep, mktemp, mv, rm,
# sort, head, tail, tr, uname. They read /proc and /sys themselves rather
# than through ps or who, whose options and output differ between procps,
# coreutils and busybox. What they assume: Linux, a little-endian utmp
# (every Raspberry Pi, x86 and arm64 system), USER_HZ 100.

export LC_ALL=C # '.' as decimal point in printf/awk, bytes as bytes, whatever the host locale

# Where the scripts read /proc, /sys and /etc files: other roots for tests
# (the agent's built-in checks are compared with the scripts on fixture trees).
proc_dir=${PIHEALTH_PROC_DIR:-/proc}
etc_dir=${PIHEALTH_ETC_DIR:-/etc}

die() {
    echo "${0##*/}: $*" >&2
    exit 2
}

# number NAME DEFAULT: value of env var NAME (DEFAULT when unset or empty),
# a non-negative decimal like 70 or 2.5.
number() {
    eval "_v=\${$1:-$2}"
    case $_v in
        '' | *[!0-9.]* | .* | *. | *.*.*) die "$1='$_v' is not a non-negative number" ;;
    esac
    printf '%s\n' "$_v"
}

# level VALUE NOTE WARNING CRITICAL -> normal | note | warning | critical
# (awk: thresholds may be fractional)
level() {
    awk -v v="$1" -v n="$2" -v w="$3" -v c="$4" 'BEGIN {
        print (v + 0 >= c + 0) ? "critical" : (v + 0 >= w + 0) ? "warning" : (v + 0 >= n + 0) ? "note" : "normal"
    }'
}

# worse A B -> the worse of two levels
worse() {
    for _l in critical warning note; do
        if [ "$1" = "$_l" ] || [ "$2" = "$_l" ]; then
            echo "$_l"
            return
        fi
    done
    echo normal
}

# hottest_temp -> the hottest readable thermal zone in °C (2 decimals), or -
# Zones that cannot be read (some report EIO/ENODATA) are skipped.
hottest_temp() {
    _max=
    for _f in "${PIHEALTH_THERMAL_DIR:-/sys/class/thermal}"/thermal_zone*/temp; do
        _t=
        { read -r _t <"$_f"; } 2>/dev/null
        case $_t in
            '' | - | *[!0-9-]* | ?*-*) continue ;;
        esac
        if [ -z "$_max" ] || [ "$_t" -gt "$_max" ]; then _max=$_t; fi
    done
    if [ -n "$_max" ]; then
        awk -v m="$_max" 'BEGIN { printf "%.2f\n", m / 1000 }'
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

# user_names: awk program text defining name(uid) from the passwd file
# given as its first input (NR == FNR): the name, or the uid when unknown
# or longer than 32 characters (as `ps -o user:32` shows it).
user_names='
    function name(uid) { return (uid in user) ? user[uid] : uid }
    FNR == NR {
        if (split($0, p, ":") >= 3 && p[1] != "" && !(p[3] in user)) user[p[3]] = length(p[1]) <= 32 ? p[1] : p[3]
        next
    }
'
