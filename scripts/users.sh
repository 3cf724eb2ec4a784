#!/bin/sh
# users.sh — who is on the machine and who holds root rights.
# Output (one line): USER_COUNT MOST_ACTIVE ROOT_USERS LOGGED_IN LEVEL
#   USER_COUNT  distinct users logged in (utmp, as `who` reads it)
#   MOST_ACTIVE up to 3 users owning the most processes, comma-separated
#   ROOT_USERS  accounts with uid 0 or in group sudo/wheel/admin (local
#               /etc/passwd and /etc/group), comma-separated
#   LOGGED_IN   user@source:tty for each session (source empty when local)
#   Empty lists print as "-". LEVEL is note when more than one account has uid 0.
#   Sessions are utmp's user processes whose process still exists, read with
#   od (busybox's who and GNU who print different columns); a process's
#   owner is the owner of /proc/PID, named from /etc/passwd (else the uid).
# Env (for tests): PIHEALTH_ETC_DIR (/etc: passwd, group), PIHEALTH_UTMP
#   (/var/run/utmp), PIHEALTH_PROC_DIR (/proc).
# POSIX sh; see common.sh for what the scripts need (utmp: glibc's 384-byte
# records, little-endian).
set -u
# shellcheck source=scripts/common.sh
. "$(dirname -- "$0")/common.sh"

utmp=${PIHEALTH_UTMP:-/var/run/utmp}

# join: read words one per line, print them comma-separated, or - when none.
join() { awk 'NF { s = s (n++ ? "," : "") $1 } END { print n ? s : "-" }'; }

[ -r "$etc_dir/passwd" ] && [ -r "$etc_dir/group" ] || die "cannot read $etc_dir/passwd or $etc_dir/group"
# The live pids, by a glob: `ls` fails (busybox's) when a process exits
# while it lists.
[ -d "$proc_dir" ] || die "cannot list $proc_dir"
pids=$(for d in "$proc_dir"/[0-9]*; do echo "${d##*/}"; done)

# utmp records: type (int16 at 0), pid (int32 at 4), line (32 bytes at 8),
# user (32 at 44), host (256 at 76). A missing utmp: nobody logged in.
# Out: "USER LINE SOURCE" per live user session (USER_PROCESS, 7), SOURCE
# empty for local sessions and X displays (":0"), blanks in it as "_".
sessions=
if [ -r "$utmp" ]; then
    sessions=$({ printf '%s\n' "$pids"; echo --; od -An -v -tu1 "$utmp"; } | awk '
        function text(from, len,   s, i, b) {
            s = ""
            for (i = from; i < from + len; i++) { b = byte[i]; if (b == 0) break; s = s sprintf("%c", b) }
            return s
        }
        !od { if ($0 == "--") od = 1; else live[$1] = 1; next }
        {
            for (i = 1; i <= NF; i++) byte[n++] = $i
            while (n >= 384) {
                kind = byte[0] + 256 * byte[1]
                pid = byte[4] + 256 * byte[5] + 65536 * byte[6] + 16777216 * byte[7]
                user = text(44, 32)
                if (kind == 7 && user != "" && (pid >= 2147483648 || pid == 0 || (pid in live))) {
                    src = text(76, 256)
                    if (src ~ /^:/) src = ""
                    gsub(/[ \t]+/, "_", src)
                    line = text(8, 32)
                    print user, line, src
                }
                for (i = 384; i < n; i++) byte[i - 384] = byte[i]
                n -= 384
            }
        }')
fi
user_count=$(printf '%s\n' "$sessions" | awk 'NF && !seen[$1]++ { n++ } END { print n + 0 }')
logged_in=$(printf '%s\n' "$sessions" | awk 'NF { print $1 "@" $3 ":" $2 }' | join)

# Process owners: the uid column of `ls -ln /proc` for the numeric entries.
most_active=$(ls -ln "$proc_dir" 2>/dev/null | awk '$1 != "total" && $NF ~ /^[0-9]+$/ { print $3 }' |
    awk "$user_names"'{ n[name($1)]++ } END { for (u in n) print n[u], u }' "$etc_dir/passwd" - |
    sort -k1,1nr -k2,2 | head -n 3 | awk '{ print $2 }' | join)

# First the admin groups' gids and members, then every passwd account with
# uid 0 or one of those as primary group, then members not in /etc/passwd.
# The last line out is the number of uid-0 accounts.
root_info=$(awk -F: '
    FNR == NR {
        if ($1 == "sudo" || $1 == "wheel" || $1 == "admin") {
            gid[$3] = 1
            k = split($4, m, ",")
            for (i = 1; i <= k; i++) if (m[i] != "" && !(m[i] in member)) { member[m[i]] = 1; order[++nm] = m[i] }
        }
        next
    }
    /^[#+-]/ || NF < 4 { next }                 # comments, NIS compat entries
    {
        known[$1] = 1
        if ($3 == 0) uid0++
        if ($3 == 0 || ($4 in gid) || ($1 in member)) print $1
    }
    END {
        for (i = 1; i <= nm; i++) if (!(order[i] in known)) print order[i]
        print uid0 + 0
    }' "$etc_dir/group" "$etc_dir/passwd") || die "cannot parse $etc_dir/passwd or $etc_dir/group"
uid0=$(printf '%s\n' "$root_info" | tail -n 1)
root_users=$(printf '%s\n' "$root_info" | sed '$d' | awk '!seen[$1]++' | join)

level=normal
[ "$uid0" -gt 1 ] && level=note

echo "$user_count $most_active $root_users $logged_in $level"
