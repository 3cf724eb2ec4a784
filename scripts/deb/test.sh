#!/usr/bin/env bash
# The Debian package, end to end (issue 16): build it, check it with
# lintian, install it with dpkg on this machine, run both daemons the way
# the units do (user pihealth, WorkingDirectory=/var/lib/pihealth, the
# units' ExecStart arguments and UMask, without systemd), see a pull land,
# then purge it and check nothing is left.
#
# Run as root on a Debian machine with cargo-deb and lintian (.ci/run
# installs both). Prints SKIPPED and exits 0 (1 with CI=true) when it cannot run: not root,
# no dpkg, or a pihealth package already installed here (never touched).
# Uses loopback addresses 127.0.94.x.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

skip() {
    echo "SKIPPED: deb package test: $*"
    # In CI it must run.
    [[ ${CI:-} != true ]] || exit 1
    exit 0
}
[[ $(id -u) -eq 0 ]] || skip "needs root (dpkg -i)"
command -v dpkg >/dev/null && command -v dpkg-deb >/dev/null || skip "no dpkg"
if dpkg-query -W -f='${Status}' pihealth 2>/dev/null | grep -q 'installed'; then
    skip "a pihealth package is already installed here; not touching it"
fi
for tool in cargo-deb lintian; do
    command -v "$tool" >/dev/null || {
        echo "error: $tool missing (cargo install cargo-deb; apt-get install lintian)" >&2
        exit 1
    }
done

master_pid=""
agent_pid=""
cleanup() {
    local status=$?
    for pid in $master_pid $agent_pid; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if ((status != 0)); then
        echo "-- failed; master log:" >&2
        cat "$work/master.log" >&2 2>/dev/null || true
        echo "-- agent log:" >&2
        cat "$work/agent.log" >&2 2>/dev/null || true
    fi
    dpkg --purge pihealth >/dev/null 2>&1 || true
    rm -rf "$work"
    exit "$status"
}
work=$(mktemp -d)
trap cleanup EXIT

step() { echo "== $*"; }

step "build"
scripts/deb/build.sh --quiet
deb=$(ls -t target/debian/pihealth_*.deb | head -1)
echo "$deb"

step "lintian"
# Errors fail the test; warnings and notes are shown.
lintian --no-tag-display-limit "$deb" | tee "$work/lintian.txt" || true
if grep -q '^E:' "$work/lintian.txt"; then
    echo "lintian reports errors (above)" >&2
    exit 1
fi

step "install"
dpkg -i "$deb"
getent passwd pihealth >/dev/null || { echo "no pihealth user" >&2; exit 1; }
for f in /usr/bin/pihealth /usr/bin/pihealth-agent /etc/pihealth/master.yaml /etc/pihealth/agent.yaml \
    /usr/share/pihealth/scripts/cpu.sh /lib/systemd/system/pihealth-master.service \
    /lib/systemd/system/pihealth-agent.service; do
    [[ -e $f ]] || { echo "missing: $f" >&2; exit 1; }
done
[[ $(stat -c '%U:%G %a' /var/lib/pihealth) == "pihealth:pihealth 750" ]] || {
    echo "/var/lib/pihealth: $(stat -c '%U:%G %a' /var/lib/pihealth)" >&2
    exit 1
}
# Nothing keyed or started by the package.
[[ ! -e /etc/pihealth/pihealth.key ]] || { echo "the package made a key" >&2; exit 1; }
if pgrep -u pihealth >/dev/null; then
    echo "something runs as pihealth after install" >&2
    exit 1
fi
# Without a key the daemons refuse to start, with exit 2 (no restart loop).
code=0
(cd /var/lib/pihealth && setpriv --reuid=pihealth --regid=pihealth --init-groups \
    /usr/bin/pihealth agent -c /etc/pihealth/agent.yaml) 2>"$work/nokey.txt" || code=$?
[[ $code -eq 2 ]] || { echo "no key: exit $code, expected 2" >&2; cat "$work/nokey.txt" >&2; exit 1; }

step "configure as the README says: a key, then two lines"
pihealth keygen /etc/pihealth/pihealth.key
chown pihealth: /etc/pihealth/pihealth.key
# One master and one agent on this machine, each on its own loopback
# address (block 94). The lines an operator edits, plus fast intervals.
sed -i -e 's|^agents: \[\]$|agents: ["127.0.94.2:8000"]|' \
    -e 's|^listen: .*|listen: "127.0.94.1:8080"|' \
    -e 's|^alarm_listen: .*|alarm_listen: "127.0.94.1:8081"|' \
    -e 's|^http_listen: .*|http_listen: "127.0.94.1:8082"|' \
    -e 's|^pull_interval: .*|pull_interval: 1s|' /etc/pihealth/master.yaml
sed -i -e 's|^master: .*|master: "127.0.94.1:8080"|' \
    -e 's|^# *name: .*|name: debtest|' \
    -e 's|^control_listen: .*|control_listen: "127.0.94.2:8000"|' \
    -e 's|^data_listen: .*|data_listen: "127.0.94.2:8001"|' /etc/pihealth/agent.yaml
grep -q '^name: debtest' /etc/pihealth/agent.yaml || echo 'name: debtest' >>/etc/pihealth/agent.yaml

step "run both daemons as the units do"
unit_exec() { # unit → its ExecStart command line
    sed -n 's/^ExecStart=//p' "/lib/systemd/system/$1.service"
}
as_unit() { # unit log
    local unit=$1 log=$2
    # shellcheck disable=SC2046 # the ExecStart line is words, no quoting in it
    (cd /var/lib/pihealth && umask 0027 && exec setpriv --reuid=pihealth --regid=pihealth \
        --init-groups env RUST_LOG=info $(unit_exec "$unit")) >"$log" 2>&1 &
}
as_unit pihealth-master "$work/master.log"
master_pid=$!
as_unit pihealth-agent "$work/agent.log"
agent_pid=$!

landed=/var/lib/pihealth/log/debtest/cpu.log
for _ in $(seq 1 120); do
    [[ -s $landed ]] && break
    sleep 0.5
done
[[ -s $landed ]] || { echo "no pull landed in $landed within 60 s" >&2; exit 1; }
echo "pulled: $(wc -l <"$landed") cpu line(s); $(head -1 "$landed")"
[[ $(stat -c %U "$landed") == pihealth ]] || { echo "$landed not owned by pihealth" >&2; exit 1; }
(cd /var/lib/pihealth && pihealth status -c /etc/pihealth/master.yaml)

step "stop (SIGTERM, as systemd does): both exit 0"
kill -TERM "$master_pid" "$agent_pid"
for pid in "$master_pid" "$agent_pid"; do
    code=0
    wait "$pid" || code=$?
    [[ $code -eq 0 ]] || { echo "pid $pid exited $code" >&2; exit 1; }
done
master_pid=""
agent_pid=""

step "purge"
dpkg --purge pihealth
for f in /usr/bin/pihealth /usr/bin/pihealth-agent /etc/pihealth /var/lib/pihealth /lib/systemd/system/pihealth-master.service \
    /usr/share/pihealth; do
    [[ ! -e $f ]] || { echo "left after purge: $f" >&2; exit 1; }
done
echo "== deb package test passed"
