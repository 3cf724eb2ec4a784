#!/usr/bin/env bash
# proc.sh — processes using much CPU or memory, on two looks some seconds apart.
# Output: NAME PID USER CPU_PCT MEM_PCT LEVEL   one line per process, or: none normal
#   A process is listed when its CPU% or MEM% is at or above the threshold on
#   the first look AND, with the same pid and name, on the second look
#   PIHEALTH_PROC_RECHECK seconds later; values are the second look's.
#   LEVEL is warning when either value is >= 80, else note.
#   CPU% is ps's: CPU time over the process's lifetime, per core (so a
#   multi-threaded process can show more than 100).
# Env: PIHEALTH_PROC_THRESHOLD (50), PIHEALTH_PROC_RECHECK (5 s).
set -u
# shellcheck source=scripts/common.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

threshold=$(number PIHEALTH_PROC_THRESHOLD 50) || exit 2
recheck=$(number PIHEALTH_PROC_RECHECK 5) || exit 2

# look: "PID CPU MEM USER NAME" for each process over the threshold, leaving
# out this script and its own children (ps, awk, sleep).
look() {
    local out
    out=$(ps -eo pid=,ppid=,pcpu=,pmem=,user:32=,comm= --sort=-pcpu) || die "ps failed"
    awk -v thr="$threshold" -v self=$$ '
        $1 == self || $2 == self { next }
        $3 >= thr + 0 || $4 >= thr + 0 {
            name = $6                          # comm may contain spaces
            for (i = 7; i <= NF; i++) name = name "_" $i
            print $1, $3, $4, $5, name
        }' <<<"$out"
}

first=$(look) || exit 2
if [[ -n $first ]]; then
    sleep "$recheck" || die "sleep $recheck failed"
    second=$(look) || exit 2
else
    second= # nothing to recheck: skip the wait
fi

# Keep second-look entries whose pid and name were already there the first
# time (the name guards against a reused pid).
awk '
    NR == FNR { if (NF) first[$1 " " $5] = 1; next }
    ($1 " " $5) in first {
        print $5, $1, $4, $2, $3, ($2 >= 80 || $3 >= 80) ? "warning" : "note"
        n++
    }
    END { if (!n) print "none normal" }' <(printf '%s\n' "$first") <(printf '%s\n' "$second")
