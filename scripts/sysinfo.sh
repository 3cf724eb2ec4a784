#!/bin/sh
# sysinfo.sh — one-line summary of the host.
# Output: HOSTNAME OS KERNEL UPTIME_S LOAD1 DISK_TOTAL_MIB DISK_USED_PCT
#         MEM_TOTAL_MIB MEM_USED_PCT TEMP DISK_LEVEL MEM_LEVEL TEMP_LEVEL
#   OS is PRETTY_NAME from /etc/os-release, spaces as "_"; disk figures are
#   disk.sh's total line (this script runs the disk.sh next to it); TEMP is
#   the hottest thermal zone in °C, or - (TEMP_LEVEL is then normal).
# Env: the PIHEALTH_DISK_*, PIHEALTH_MEM_* and PIHEALTH_TEMP_* thresholds
#      (NOTE, WARNING, CRITICAL), PIHEALTH_THERMAL_DIR (/sys/class/thermal)
#      as in cpu.sh, PIHEALTH_PROC_DIR (/proc) and PIHEALTH_ETC_DIR (/etc;
#      os-release, then ../usr/lib/os-release) for tests.
# POSIX sh; see common.sh for what the scripts need.
set -u
# shellcheck source=scripts/common.sh
. "$(dirname -- "$0")/common.sh"

mem_note=$(number PIHEALTH_MEM_NOTE 70) || exit 2
mem_warn=$(number PIHEALTH_MEM_WARNING 80) || exit 2
mem_crit=$(number PIHEALTH_MEM_CRITICAL 90) || exit 2
temp_note=$(number PIHEALTH_TEMP_NOTE 50) || exit 2
temp_warn=$(number PIHEALTH_TEMP_WARNING 70) || exit 2
temp_crit=$(number PIHEALTH_TEMP_CRITICAL 80) || exit 2

read -r host <"$proc_dir/sys/kernel/hostname" || die "cannot read hostname"
read -r kernel <"$proc_dir/sys/kernel/osrelease" || die "cannot read kernel release"
read -r uptime _ <"$proc_dir/uptime" || die "cannot read $proc_dir/uptime"
read -r load1 _ <"$proc_dir/loadavg" || die "cannot read $proc_dir/loadavg"

# PRETTY_NAME="Debian GNU/Linux 12 (bookworm)" -> Debian_GNU/Linux_12_(bookworm)
# The first of the files that exist (awk gives up at a missing one).
os=
for f in "$etc_dir/os-release" "$etc_dir/../usr/lib/os-release"; do
    [ -r "$f" ] || continue
    os=$(awk -F= '$1 == "PRETTY_NAME" { v = substr($0, index($0, "=") + 1); gsub(/^["'\'']|["'\'']$/, "", v); gsub(/[ \t]+/, "_", v); print v; exit }' \
        "$f" 2>/dev/null)
    [ -z "$os" ] || break
done
[ -n "$os" ] || os=$(uname -s)

# Last line of disk.sh: total TOTAL_MIB FREE_MIB USED_PCT LEVEL
disk=$(sh "$(dirname -- "$0")/disk.sh") || die "disk.sh failed"
# shellcheck disable=SC2046 # five words
set -- $(printf '%s\n' "$disk" | tail -n 1)
[ $# -eq 5 ] || die "unexpected disk.sh output"
disk_total=$2 disk_pct=$4 disk_level=$5

# Same definition as mem.sh (common.sh's mem_usage).
usage=$(mem_usage) || die "cannot parse $proc_dir/meminfo"
# shellcheck disable=SC2086 # three words
set -- $usage
[ $# -eq 3 ] || die "cannot parse $proc_dir/meminfo"
mem_total=$1 mem_pct=$3

temp=$(hottest_temp) temp_level=normal
[ "$temp" = - ] || temp_level=$(level "$temp" "$temp_note" "$temp_warn" "$temp_crit")

# Hostname and kernel release never hold spaces in practice; make sure.
host=$(printf '%s' "$host" | tr ' ' _)
kernel=$(printf '%s' "$kernel" | tr ' ' _)
echo "$host $os $kernel ${uptime%.*} $load1 $disk_total $disk_pct $mem_total $mem_pct $temp" \
    "$disk_level $(level "$mem_pct" "$mem_note" "$mem_warn" "$mem_crit") $temp_level"
