#!/usr/bin/env bash
# users.sh — who is on the machine and who holds root rights.
# Output (one line): USER_COUNT MOST_ACTIVE ROOT_USERS LOGGED_IN LEVEL
#   USER_COUNT  distinct users logged in (who)
#   MOST_ACTIVE up to 3 users owning the most processes, comma-separated
#   ROOT_USERS  accounts with uid 0 or in group sudo/wheel/admin (local
#               /etc/passwd and /etc/group), comma-separated
#   LOGGED_IN   user@source:tty for each session (source empty when local)
#   Empty lists print as "-". LEVEL is note when more than one account has uid 0.
# Env (for tests): PIHEALTH_ETC_DIR (/etc: passwd, group), PIHEALTH_UTMP (the
#   file `who` reads; when set, who does not drop sessions whose process is gone).
set -u
# shellcheck source=scripts/common.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

# join: read words one per line, print them comma-separated, or - when none.
join() { awk 'NF { s = s (n++ ? "," : "") $1 } END { print n ? s : "-" }'; }

sessions=$(who ${PIHEALTH_UTMP:+"$PIHEALTH_UTMP"}) || die "who failed"
user_count=$(awk 'NF && !seen[$1]++ { n++ } END { print n + 0 }' <<<"$sessions")

# who: NAME LINE TIME... [(COMMENT)] — the comment is the remote host, or an X
# display like ":0" (local). It may hold spaces ("mosh [1234]"): they become "_".
logged_in=$(awk 'NF {
        src = ""
        if (match($0, /\(.*\)$/)) src = substr($0, RSTART + 1, RLENGTH - 2)
        if (src ~ /^:/) src = ""
        gsub(/[ \t]+/, "_", src)
        print $1 "@" src ":" $2
    }' <<<"$sessions" | join)

procs=$(ps -eo user:32=) || die "ps failed"
most_active=$(awk 'NF { n[$1]++ } END { for (u in n) print n[u], u }' <<<"$procs" |
    sort -k1,1nr -k2,2 | head -n 3 | awk '{ print $2 }' | join)

[[ -r $etc_dir/passwd && -r $etc_dir/group ]] || die "cannot read $etc_dir/passwd or $etc_dir/group"
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
uid0=${root_info##*$'\n'}
root_users=$(sed '$d' <<<"$root_info" | awk '!seen[$1]++' | join)

level=normal
((uid0 > 1)) && level=note

echo "$user_count $most_active $root_users $logged_in $level"
