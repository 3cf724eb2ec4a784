#!/bin/sh
# mem.sh — memory total, used, used %, dynamic average of used %, level.
# Output (one line): TOTAL_MIB USED_MIB USED_PCT DYN_AVG_PCT LEVEL
#   used = MemTotal - MemAvailable (what the kernel could not hand out without swapping)
#   dynamic average = 0.3 * previous average + 0.7 * current used %, kept in
#   $PIHEALTH_STATE_DIR/mem.dynavg (the first run's average is the current value).
# Env: PIHEALTH_MEM_NOTE (70), PIHEALTH_MEM_WARNING (80), PIHEALTH_MEM_CRITICAL (90),
#      PIHEALTH_STATE_DIR (${TMPDIR:-/tmp}), PIHEALTH_PROC_DIR (/proc; another root for tests).
# POSIX sh; see common.sh for what the scripts need.
set -u
# shellcheck source=scripts/common.sh
. "$(dirname -- "$0")/common.sh"

note=$(number PIHEALTH_MEM_NOTE 70) || exit 2
warn=$(number PIHEALTH_MEM_WARNING 80) || exit 2
crit=$(number PIHEALTH_MEM_CRITICAL 90) || exit 2
state_dir=${PIHEALTH_STATE_DIR:-${TMPDIR:-/tmp}}
state=$state_dir/mem.dynavg

usage=$(mem_usage) || die "cannot parse $proc_dir/meminfo"
# shellcheck disable=SC2086 # three words
set -- $usage
[ $# -eq 3 ] || die "cannot parse $proc_dir/meminfo"
total_mib=$1 used_mib=$2 used_pct=$3

# A missing or garbled state file counts as a first run.
prev=
if [ -r "$state" ]; then read -r prev <"$state" || true; fi
case $prev in
    '' | *[!0-9.]* | .* | *. | *.*.*) avg=$used_pct ;;
    *) avg=$(awk -v p="$prev" -v c="$used_pct" 'BEGIN { printf "%.2f", 0.3 * p + 0.7 * c }') ;;
esac

# Write atomically (tmp file + rename) so a concurrent or killed run never
# leaves a half-written file. A state dir we cannot write to costs only the
# average's memory, not the measurement: warn, still print the line, exit 0.
if tmp=$(mktemp "$state.XXXXXX" 2>/dev/null); then
    if ! { echo "$avg" >"$tmp" && mv -f "$tmp" "$state"; }; then
        rm -f "$tmp"
        echo "${0##*/}: cannot write $state" >&2
    fi
else
    echo "${0##*/}: cannot write in state dir $state_dir" >&2
fi

echo "$total_mib $used_mib $used_pct $avg $(level "$used_pct" "$note" "$warn" "$crit")"
