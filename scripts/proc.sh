#!/bin/sh
# proc.sh — processes using much CPU or memory, on two looks some seconds apart.
# Output: NAME PID USER CPU_PCT MEM_PCT LEVEL   one line per process, or: none normal
#   A process is listed when its CPU% or MEM% is at or above the threshold on
#   the first look AND, with the same pid and name, on the second look
#   PIHEALTH_PROC_RECHECK seconds later; values are the second look's.
#   LEVEL is warning when either value is >= 80, else note.
#   CPU% is ps's: CPU time over the process's lifetime, per core (so a
#   multi-threaded process can show more than 100), one decimal below 100.
#   MEM% is resident memory over MemTotal. Both are read from /proc/PID/stat
#   (not through ps, whose busybox version has no %CPU); USER is the name in
#   /etc/passwd of the owner of /proc/PID, else the uid.
# Env: PIHEALTH_PROC_THRESHOLD (50), PIHEALTH_PROC_RECHECK (5 s),
#      PIHEALTH_PROC_DIR (/proc) and PIHEALTH_ETC_DIR (/etc) for tests.
# POSIX sh; see common.sh for what the scripts need.
set -u
# shellcheck source=scripts/common.sh
. "$(dirname -- "$0")/common.sh"

threshold=$(number PIHEALTH_PROC_THRESHOLD 50) || exit 2
recheck=$(number PIHEALTH_PROC_RECHECK 5) || exit 2
page=$(getconf PAGESIZE 2>/dev/null) || page=4096 # busybox has no getconf
case $page in '' | *[!0-9]*) page=4096 ;; esac

# look: "PERMILLE PID CPU MEM NAME" for each process over the threshold,
# leaving out this script and everything it started (cat, awk, sleep: a
# process a few milliseconds old may show 100% CPU).
look() {
    read -r uptime _ <"$proc_dir/uptime" || die "cannot read $proc_dir/uptime"
    (cd "$proc_dir" && cat [0-9]*/stat 2>/dev/null) | awk -v thr="$threshold" -v self=$$ \
        -v up="$uptime" -v page_kib=$((page / 1024)) -v meminfo="$proc_dir/meminfo" '
        BEGIN {
            while ((getline l < meminfo) > 0) { split(l, w, " "); if (w[1] == "MemTotal:") total = w[2] }
            if (total <= 0) { bad = 1; exit 2 }
        }
        {
            # pid (comm) state ppid ... utime(14) stime(15) ... starttime(22) vsize rss(24)
            op = index($0, "("); cl = 0
            for (i = length($0); i > op; i--) if (substr($0, i, 1) == ")") { cl = i; break }
            if (!op || !cl) next
            pid = $1 + 0
            comm = substr($0, op + 1, cl - op - 1)
            k = split(substr($0, cl + 1), f, " ")     # f[1] is the state, field 3
            if (k < 22) next
            parent[pid] = f[2]
            name = ""; nw = split(comm, cw, /[ \t\n]+/)
            for (i = 1; i <= nw; i++) if (cw[i] != "") name = name (name == "" ? "" : "_") cw[i]
            ticks = f[12] + f[13]
            life = int((up - f[20] / 100) * 100)
            cpu = life > 0 ? int(ticks * 1000 / life) : 0
            mem = int(f[22] * page_kib * 1000 / total); if (mem > 999) mem = 999
            pids[++n] = pid; cpus[pid] = cpu; mems[pid] = mem; names[pid] = name
        }
        END {
            if (bad) exit 2
            for (j = 1; j <= n; j++) {
                pid = pids[j]
                mine = 0
                p = pid; d = 0
                while (p != "" && p > 0 && d < 64) {
                    if (p == self) { mine = 1; break }
                    p = parent[p]; d++
                }
                if (mine) continue
                c = cpus[pid]
                ct = c > 999 ? sprintf("%d", int(c / 10)) : sprintf("%d.%d", int(c / 10), c % 10)
                mt = sprintf("%d.%d", int(mems[pid] / 10), mems[pid] % 10)
                if (ct + 0 >= thr + 0 || mt + 0 >= thr + 0) print c, pid, ct, mt, names[pid]
            }
        }'
}

first=$(look) || die "cannot read $proc_dir (stat, uptime, meminfo)"
if [ -n "$first" ]; then
    sleep "$recheck" || die "sleep $recheck failed"
    second=$(look) || die "cannot read $proc_dir (stat, uptime, meminfo)"
else
    second= # nothing to recheck: skip the wait
fi

# Keep second-look entries whose pid and name were already there the first
# time (the name guards against a reused pid), busiest first, with owners.
listed=$(printf '%s\n%s\n' "$first" "--" "$second" | awk '
    $0 == "--" { second = 1; next }
    !second { if (NF) seen[$2 " " $5] = 1; next }
    ($2 " " $5) in seen' | sort -k1,1nr -k2,2n)
if [ -z "$listed" ]; then
    echo "none normal"
    exit 0
fi
printf '%s\n' "$listed" | while read -r _ pid cpu mem name; do
    uid=$(ls -ldn "$proc_dir/$pid" 2>/dev/null | awk '{ print $3 }')
    echo "$pid $cpu $mem $name ${uid:-?}"
done | awk "$user_names"'
    { lvl = ($2 >= 80 || $3 >= 80) ? "warning" : "note"; print $4, $1, name($5), $2, $3, lvl }
' "$etc_dir/passwd" -
