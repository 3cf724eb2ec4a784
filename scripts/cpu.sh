#!/bin/sh
# cpu.sh — load averages, CPU usage over a short window, temperature, level.
# Output (one line): LOAD1 LOAD5 LOAD15 USAGE_PCT TEMP_C LEVEL
#   e.g. 0.02 0.08 0.08 31.56 49.38 normal      (TEMP_C is - without a sensor)
#   LEVEL is the worse of usage's and temperature's.
# Env: PIHEALTH_CPU_NOTE (70), PIHEALTH_CPU_WARNING (80), PIHEALTH_CPU_CRITICAL (95),
#      PIHEALTH_TEMP_NOTE (50), PIHEALTH_TEMP_WARNING (70), PIHEALTH_TEMP_CRITICAL (80),
#      PIHEALTH_CPU_WINDOW (0.5 s between samples),
#      PIHEALTH_THERMAL_DIR (/sys/class/thermal; another root for tests or containers),
#      PIHEALTH_PROC_DIR (/proc; likewise).
# POSIX sh; see common.sh for what the scripts need.
set -u
# shellcheck source=scripts/common.sh
. "$(dirname -- "$0")/common.sh"

cpu_note=$(number PIHEALTH_CPU_NOTE 70) || exit 2
cpu_warn=$(number PIHEALTH_CPU_WARNING 80) || exit 2
cpu_crit=$(number PIHEALTH_CPU_CRITICAL 95) || exit 2
temp_note=$(number PIHEALTH_TEMP_NOTE 50) || exit 2
temp_warn=$(number PIHEALTH_TEMP_WARNING 70) || exit 2
temp_crit=$(number PIHEALTH_TEMP_CRITICAL 80) || exit 2
window=$(number PIHEALTH_CPU_WINDOW 0.5) || exit 2

read -r load1 load5 load15 _ <"$proc_dir/loadavg" || die "cannot read $proc_dir/loadavg"

# First line of /proc/stat: cpu user nice system idle iowait irq softirq steal guest guest_nice
# (guest time is already counted in user, so only the first eight are summed).
# Prints "TOTAL IDLE".
sample() {
    read -r _ u n s i w q sq st _ <"$proc_dir/stat" || die "cannot read $proc_dir/stat"
    echo "$((u + n + s + i + w + q + sq + st)) $((i + w))"
}
first=$(sample) || exit 2
sleep "$window" || die "sleep $window failed"
second=$(sample) || exit 2
usage=$(echo "$first $second" | awk '{
    dt = $3 - $1; di = $4 - $2
    printf "%.2f", (dt > 0 ? (dt - di) * 100 / dt : 0) }')

temp=$(hottest_temp)

lvl=$(level "$usage" "$cpu_note" "$cpu_warn" "$cpu_crit")
if [ "$temp" != - ]; then
    lvl=$(worse "$lvl" "$(level "$temp" "$temp_note" "$temp_warn" "$temp_crit")")
fi

echo "$load1 $load5 $load15 $usage $temp $lvl"
