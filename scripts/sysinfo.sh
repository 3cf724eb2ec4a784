#!/usr/bin/env bash
# sysinfo.sh — one-line summary of the host.
# Output: HOSTNAME OS KERNEL UPTIME_S LOAD1 DISK_TOTAL_MIB DISK_USED_PCT
#         MEM_TOTAL_MIB MEM_USED_PCT TEMP DISK_LEVEL MEM_LEVEL TEMP_LEVEL
#   OS is PRETTY_NAME from /etc/os-release, spaces as "_"; disk figures are
#   disk.sh's total line (this script runs the disk.sh next to it); TEMP is
#   the hottest thermal zone in °C, or - (TEMP_LEVEL is then normal).
# Env: the PIHEALTH_DISK_*, PIHEALTH_MEM_* and PIHEALTH_TEMP_* thresholds,
#      PIHEALTH_THERMAL_DIR (/sys/class/thermal) as in cpu.sh, PIHEALTH_PROC_DIR
#      (/proc) and PIHEALTH_ETC_DIR (/etc; os-release, then ../usr/lib/os-release)
#      for tests.
set -u
# shellcheck source=scripts/common.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

mem_note=$(number PIHEALTH_MEM_NOTE 70) || exit 2
mem_warn=$(number PIHEALTH_MEM_WARNING 80) || exit 2
temp_note=$(number PIHEALTH_TEMP_NOTE 50) || exit 2
temp_warn=$(number PIHEALTH_TEMP_WARNING 70) || exit 2

read -r host <"$proc_dir/sys/kernel/hostname" || die "cannot read hostname"
read -r kernel <"$proc_dir/sys/kernel/osrelease" || die "cannot read kernel release"
read -r uptime _ <"$proc_dir/uptime" || die "cannot read $proc_dir/uptime"
read -r load1 _ <"$proc_dir/loadavg" || die "cannot read $proc_dir/loadavg"

# PRETTY_NAME="Debian GNU/Linux 12 (bookworm)" -> Debian_GNU/Linux_12_(bookworm)
# Only files that exist: mawk gives up at a missing one (no /etc/os-release
# would then mean no fallback to /usr/lib/os-release).
release=()
for f in "$etc_dir/os-release" "$etc_dir/../usr/lib/os-release"; do
    [[ -r $f ]] && release+=("$f")
done
os=
if ((${#release[@]})); then
    os=$(awk -F= '$1 == "PRETTY_NAME" { v = substr($0, index($0, "=") + 1); gsub(/^["'\'']|["'\'']$/, "", v); gsub(/[ \t]+/, "_", v); print v; exit }' \
        "${release[@]}" 2>/dev/null)
fi
[[ -n $os ]] || os=$(uname -s)

# Last line of disk.sh: total TOTAL_MIB FREE_MIB USED_PCT LEVEL
disk=$(bash "$(dirname -- "${BASH_SOURCE[0]}")/disk.sh") || die "disk.sh failed"
read -r _ disk_total _ disk_pct disk_level <<<"${disk##*$'\n'}"
[[ -n ${disk_level:-} ]] || die "unexpected disk.sh output"

# Same definition as mem.sh (common.sh's mem_usage).
read -r mem_total _ mem_pct < <(mem_usage)
[[ -n ${mem_pct:-} ]] || die "cannot parse $proc_dir/meminfo"

temp=$(hottest_temp) temp_level=normal
[[ $temp == - ]] || temp_level=$(level "$temp" "$temp_note" "$temp_warn")

# Hostname and kernel release never hold spaces in practice; make sure.
echo "${host// /_} $os ${kernel// /_} ${uptime%.*} $load1 $disk_total $disk_pct $mem_total $mem_pct $temp" \
    "$disk_level $(level "$mem_pct" "$mem_note" "$mem_warn") $temp_level"
