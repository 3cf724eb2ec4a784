#!/bin/sh
# disk.sh — per real filesystem: mount, total, free, used %, level; then a total line.
# Output: MOUNT TOTAL_MIB FREE_MIB USED_PCT LEVEL   (one line per filesystem)
#         total TOTAL_MIB FREE_MIB USED_PCT LEVEL   (always last, zeros when none)
#   FREE is the space available to ordinary users; USED_PCT = used / (used + free),
#   the figure df's Use% shows (blocks reserved for root count as neither).
# Env: PIHEALTH_DISK_NOTE (80), PIHEALTH_DISK_WARNING (90), PIHEALTH_DISK_CRITICAL (95).
# POSIX sh; see common.sh for what the scripts need. With busybox df (no -l)
# network file systems are left out by type, but df still asks them: a dead
# NFS server can hang this script until the collector's timeout.
set -u
# shellcheck source=scripts/common.sh
. "$(dirname -- "$0")/common.sh"

note=$(number PIHEALTH_DISK_NOTE 80) || exit 2
warn=$(number PIHEALTH_DISK_WARNING 90) || exit 2
crit=$(number PIHEALTH_DISK_CRITICAL 95) || exit 2

# -l: local filesystems only. Network mounts belong to their server (and a
# dead NFS server would hang df). df exits 1 when some mount cannot be
# statted but still prints the others, so its status is not checked; a df
# that printed nothing at all is the failure. busybox df has no -l.
out=$(df -P -T -k -l 2>/dev/null)
[ -n "$out" ] || out=$(df -P -T -k 2>/dev/null)
[ -n "$out" ] || die "df printed nothing"

printf '%s\n' "$out" | awk -v note="$note" -v warn="$warn" -v crit="$crit" '
    function level(p) {
        return p >= crit + 0 ? "critical" : p >= warn + 0 ? "warning" : p >= note + 0 ? "note" : "normal"
    }
    function pct(used, free) { return used + free > 0 ? used * 100 / (used + free) : 0 }
    # Pseudo and memory-backed filesystems, read-only images (always 100% used),
    # and network filesystems (for a df without -l).
    BEGIN {
        n = split("tmpfs devtmpfs ramfs overlay aufs squashfs iso9660 udf proc sysfs " \
                  "devpts mqueue debugfs tracefs securityfs pstore bpf configfs " \
                  "fusectl hugetlbfs autofs binfmt_misc efivarfs rpc_pipefs nsfs " \
                  "fuse.lxcfs fuse.gvfsd-fuse fuse.portal " \
                  "nfs nfs4 cifs smb3 smbfs ncpfs afs ceph glusterfs fuse.glusterfs 9p " \
                  "fuse.sshfs sshfs davfs fuse.davfs2 fuse.rclone lustre gfs2 ocfs2", t, " ")
        for (i = 1; i <= n; i++) skip[t[i]] = 1
    }
    NR == 1 { next }                           # header
    skip[$2] || $2 ~ /^cgroup/ || $3 == 0 { next }
    $1 ~ /^\/\// || $1 ~ /^[^\/]+:/ { next }     # //server/share, host:/path: remote
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
    }'
