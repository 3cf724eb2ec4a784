#!/usr/bin/env bash
# disk.sh — per real filesystem: mount, total, free, used %, level; then a total line.
# Output: MOUNT TOTAL_MIB FREE_MIB USED_PCT LEVEL   (one line per filesystem)
#         total TOTAL_MIB FREE_MIB USED_PCT LEVEL   (always last, zeros when none)
#   FREE is the space available to ordinary users; USED_PCT = used / (used + free),
#   the figure df's Use% shows (blocks reserved for root count as neither).
# Env: PIHEALTH_DISK_NOTE (80), PIHEALTH_DISK_WARNING (90).
set -u
# shellcheck source=scripts/common.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

note=$(number PIHEALTH_DISK_NOTE 80) || exit 2
warn=$(number PIHEALTH_DISK_WARNING 90) || exit 2

# -l: local filesystems only. Network mounts belong to their server (and a
# dead NFS server would hang df). df exits 1 when some mount cannot be
# statted but still prints the others, so its status is not checked; a df
# that printed nothing at all is the failure.
out=$(df -P -T -k -l 2>/dev/null)
[[ -n $out ]] || die "df printed nothing"

awk -v note="$note" -v warn="$warn" '
    function level(p) { return p >= warn + 0 ? "warning" : p >= note + 0 ? "note" : "normal" }
    function pct(used, free) { return used + free > 0 ? used * 100 / (used + free) : 0 }
    # Pseudo and memory-backed filesystems, read-only images (always 100% used).
    BEGIN {
        n = split("tmpfs devtmpfs ramfs overlay aufs squashfs iso9660 udf proc sysfs " \
                  "devpts mqueue debugfs tracefs securityfs pstore bpf configfs " \
                  "fusectl hugetlbfs autofs binfmt_misc efivarfs rpc_pipefs nsfs " \
                  "fuse.lxcfs fuse.gvfsd-fuse fuse.portal", t, " ")
        for (i = 1; i <= n; i++) skip[t[i]] = 1
    }
    NR == 1 { next }                           # header
    skip[$2] || $2 ~ /^cgroup/ || $3 == 0 { next }
    seen[$1]++ { next }                        # bind mounts, btrfs subvolumes: same device
    {
        # Fields: device type 1024-blocks used available capacity mount...
        # The mount point is the rest of the line; spaces in it become "_".
        mount = $7
        for (i = 8; i <= NF; i++) mount = mount "_" $i
        p = pct($4, $5)
        printf "%s %d %d %.2f %s\n", mount, $3 / 1024, $5 / 1024, p, level(sprintf("%.2f", p) + 0)
        total += $3; used += $4; free += $5
    }
    END {
        p = pct(used, free)
        printf "total %d %d %.2f %s\n", total / 1024, free / 1024, p, level(sprintf("%.2f", p) + 0)
    }' <<<"$out"
