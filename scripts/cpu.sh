#!/usr/bin/env bash
# cpu.sh — load averages, CPU usage over a short window, temperature, level.
# Output (one line): LOAD1 LOAD5 LOAD15 USAGE_PCT TEMP_C LEVEL
#   e.g. 0.02 0.08 0.08 31.56 49.38 normal      (TEMP_C is - without a sensor)
# Env: PIHEALTH_CPU_NOTE (70), PIHEALTH_CPU_WARNING (80), PIHEALTH_TEMP_NOTE (50),
#      PIHEALTH_TEMP_WARNING (70), PIHEALTH_CPU_WINDOW (0.5 s between samples),
#      PIHEALTH_THERMAL_DIR (/sys/class/thermal; another root for tests or containers),
#      PIHEALTH_PROC_DIR (/proc; likewise).
set -u
# shellcheck source=scripts/common.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

cpu_note=$(number PIHEALTH_CPU_NOTE 70) || exit 2
cpu_warn=$(number PIHEALTH_CPU_WARNING 80) || exit 2
temp_note=$(number PIHEALTH_TEMP_NOTE 50) || exit 2
temp_warn=$(number PIHEALTH_TEMP_WARNING 70) || exit 2
window=$(number PIHEALTH_CPU_WINDOW 0.5) || exit 2

read -r load1 load5 load15 _ <"$proc_dir/loadavg" || die "cannot read $proc_dir/loadavg"

# First line of /proc/stat: cpu user nice system idle iowait irq softirq steal guest guest_nice
# (guest time is already counted in user, so only the first eight are summed).
sample() {
    local -a f
    read -r -a f <"$proc_dir/stat" || die "cannot read $proc_dir/stat"
    echo "$((f[1] + f[2] + f[3] + f[4] + f[5] + f[6] + f[7] + f[8])) $((f[4] + f[5]))"
}
read -r total1 idle1 <<<"$(sample)" || exit 2
sleep "$window" || die "sleep $window failed"
read -r total2 idle2 <<<"$(sample)" || exit 2
usage=$(awk -v dt=$((total2 - total1)) -v di=$((idle2 - idle1)) \
    'BEGIN { printf "%.2f", (dt > 0 ? (dt - di) * 100 / dt : 0) }')

temp=$(hottest_temp)

lvl=$(level "$usage" "$cpu_note" "$cpu_warn")
if [[ $temp != - ]]; then
    tlvl=$(level "$temp" "$temp_note" "$temp_warn")
    # Keep the worse of the two.
    case $tlvl in
        warning) lvl=warning ;;
        note) [[ $lvl == normal ]] && lvl=note ;;
    esac
fi

echo "$load1 $load5 $load15 $usage $temp $lvl"
