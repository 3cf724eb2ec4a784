#!/usr/bin/env bash
# bench-peers.sh — pihealth beside the real peers, measured in one run.
#
# Usage: scripts/bench-peers.sh            (as root the first time: it installs the peers)
#
# 1. Installs the peers from Debian if missing (zabbix-agent,
#    prometheus-node-exporter, nagios-nrpe-server, monitoring-plugins-basic),
#    keeping the packaged services from running.
# 2. Starts each one itself, on loopback only, with a minimal config in a
#    temporary directory: zabbix_agentd (passive checks), node_exporter,
#    nrpe (no SSL, five checks), and a pihealth agent with the six standard
#    scripts (its own key and log directories). Every PID is recorded and
#    stopped by PID on exit.
# 3. Runs benches/peers.rs against them (the executable `cargo bench
#    --bench peers` builds; run directly, so that nothing is rebuilt
#    mid-run): idle RSS, latency and daemon CPU of one health snapshot, N
#    times, one daemon at a time. The Markdown table goes to stdout and to
#    target/bench-peers.md; `uptime` is printed before and after.
#
# Takes about 2 minutes plus the build (and the install, the first time).
# Addresses: 127.0.0.1 ports 24050/24100/24666 and 127.0.40.2:8000/8001.
#
# Env: BENCH_N (200 snapshots per daemon), BENCH_PORT_ZABBIX (24050),
#      BENCH_PORT_NODE (24100), BENCH_PORT_NRPE (24666), BENCH_AGENT_IP
#      (127.0.40.2; ports 8000/8001), BENCH_INTERVAL (400ms: the pihealth
#      collectors' interval and pull period), KEEP=1 (keep the temp dir).
# Exit: 0 done, 1 a peer could not be installed or started, or the bench failed.
set -Eeuo pipefail

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/pihealth
OUT=$TARGET/bench-peers.md
N=${BENCH_N:-200}
PORT_ZABBIX=${BENCH_PORT_ZABBIX:-24050}
PORT_NODE=${BENCH_PORT_NODE:-24100}
PORT_NRPE=${BENCH_PORT_NRPE:-24666}
AGENT_IP=${BENCH_AGENT_IP:-127.0.40.2}
INTERVAL=${BENCH_INTERVAL:-400ms}
PLUGINS=/usr/lib/nagios/plugins
PACKAGES=(zabbix-agent prometheus-node-exporter nagios-nrpe-server monitoring-plugins-basic)
SERVICES=(zabbix-agent prometheus-node-exporter nagios-nrpe-server)
NEEDED=(/usr/sbin/zabbix_agentd /usr/bin/prometheus-node-exporter /usr/sbin/nrpe
    "$PLUGINS/check_load" "$PLUGINS/check_disk" "$PLUGINS/check_users"
    "$PLUGINS/check_procs" "$PLUGINS/check_swap")

PIDS=()       # the daemons we started (our children; nrpe is its subreaper's)
PEERS=        # the bench executable (target/release/deps/peers-*)
REAPER=       # NRPE's subreaper (one of PIDS)
CHILD_PIDS=() # their own children seen at start (zabbix_agentd's workers)
MADE_POLICY=  # a policy-rc.d we created for the install, removed on exit
TMP=

say() { echo "bench-peers: $*" >&2; }
die() {
    say "$*"
    exit 1
}

# running PID: the process exists and is not a zombie.
running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

stop_all() {
    local pid i any
    ((${#PIDS[@]})) || return 0
    # Newest first; NRPE's subreaper is left to exit with nrpe (if it went
    # first, init would inherit nrpe).
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        [[ ${PIDS[i]} == "$REAPER" ]] || kill -TERM "${PIDS[i]}" 2>/dev/null || true
    done
    for ((i = 0; i < 50; i++)); do
        any=
        for pid in "${PIDS[@]}"; do running "$pid" && any=1; done
        [[ -n $any ]] || break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do
        if running "$pid"; then
            say "pid $pid did not stop on TERM: killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    wait 2>/dev/null || true
    # A worker left behind by a killed zabbix_agentd (checked by name so a
    # reused PID is never touched).
    ((${#CHILD_PIDS[@]})) || return 0
    for pid in "${CHILD_PIDS[@]}"; do
        if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == zabbix_agentd ]]; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}

cleanup() {
    local rc=$?
    trap - EXIT
    stop_all
    if [[ -n $MADE_POLICY ]]; then rm -f "$MADE_POLICY"; fi
    if [[ -n $TMP ]]; then
        if [[ -n ${KEEP:-} ]]; then say "kept $TMP"; else rm -rf "$TMP"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'say "unexpected failure at line $LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- install

install_peers() {
    local f missing=()
    for f in "${NEEDED[@]}"; do [[ -x $f ]] || missing+=("$f"); done
    ((${#missing[@]})) || return 0
    ((EUID == 0)) || die "missing ${missing[*]}; installing needs root: apt-get install -y ${PACKAGES[*]}"
    say "installing ${PACKAGES[*]} (missing: ${missing[*]}) ..."
    # Keep the packages' init scripts from starting the services at install.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        MADE_POLICY=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\n# bench-peers.sh: no service starts during its install\nexit 101\n' >"$MADE_POLICY"
        chmod 755 "$MADE_POLICY"
    fi
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${PACKAGES[@]}"; } \
        >"$TMP/apt.log" 2>&1; then
        tail -n 20 "$TMP/apt.log" >&2
        die "apt-get install failed (last lines above)"
    fi
    if [[ -n $MADE_POLICY ]]; then
        rm -f "$MADE_POLICY"
        MADE_POLICY=
    fi
    for f in "${NEEDED[@]}"; do [[ -x $f ]] || die "$f still missing after apt-get install"; done
    # Installed by us: keep them from starting at boot too.
    local svc
    for svc in "${SERVICES[@]}"; do
        if command -v systemctl >/dev/null; then systemctl disable --quiet "$svc" >/dev/null 2>&1 || true; fi
        if command -v update-rc.d >/dev/null; then update-rc.d "$svc" disable >/dev/null 2>&1 || true; fi
    done
}

# The packaged services must not run beside the bench (they would add load).
stop_packaged_services() {
    local svc
    for svc in "${SERVICES[@]}"; do
        if [[ -d /run/systemd/system ]]; then # systemd is PID 1
            if systemctl is-active --quiet "$svc" 2>/dev/null; then
                say "stopping the packaged $svc service (systemctl stop)"
                systemctl stop "$svc" || die "cannot stop $svc"
            fi
        elif [[ -x /etc/init.d/$svc ]] && /etc/init.d/"$svc" status >/dev/null 2>&1; then
            say "stopping the packaged $svc service (/etc/init.d/$svc stop)"
            /etc/init.d/"$svc" stop >/dev/null 2>&1 || die "cannot stop $svc"
        fi
    done
}

# ---------------------------------------------------------------- peers

# port_free IP PORT: nothing listens on IP:PORT or on the wildcard address.
port_free() {
    local ip=$1 port=$2 addr
    while read -r addr; do
        case $addr in
            "$ip:$port" | "0.0.0.0:$port" | "*:$port" | "[::]:$port") return 1 ;;
        esac
    done < <(ss -Hltn "sport = :$port" | awk '{ print $4 }')
    return 0
}

# start NAME LOG IP PORT COMMAND...: start a daemon in the background, record
# its PID, wait until it listens on IP:PORT (20 s at most).
start() {
    local name=$1 log=$2 ip=$3 port=$4 pid i
    shift 4
    port_free "$ip" "$port" || die "$name: $ip:$port is already in use (set BENCH_PORT_* / BENCH_AGENT_IP)"
    "$@" >"$log" 2>&1 </dev/null &
    pid=$!
    PIDS+=("$pid")
    for ((i = 0; i < 200; i++)); do
        if ! running "$pid"; then
            tail -n 15 "$log" >&2
            die "$name could not start (exited; its log is above)"
        fi
        if [[ -n $(ss -Hltn "src $ip:$port") ]]; then
            STARTED=$pid
            return 0
        fi
        sleep 0.1
    done
    tail -n 15 "$log" >&2
    die "$name did not listen on $ip:$port within 20 s (its log is above)"
}

# The commit, and whether the tree differs from it (read-only: no index refresh).
version_of_tree() {
    local commit
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null) || {
        echo '?'
        return
    }
    if [[ -n $(GIT_OPTIONAL_LOCKS=0 git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
        echo "$commit with uncommitted changes"
    else
        echo "$commit"
    fi
}

children_of() {
    cat /proc/"$1"/task/*/children 2>/dev/null || true
}

main() {
    [[ $(uname -s) == Linux ]] || die "Linux only (/proc)"
    command -v cargo >/dev/null || die "cargo not found"
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/bench-peers.XXXXXX")
    chmod 755 "$TMP" # nrpe drops to user nagios and reads its files here

    install_peers
    command -v ss >/dev/null || die "ss (iproute2) not found"
    stop_packaged_services
    # Fail before the build if an address is taken (start checks again).
    local name ip port
    while read -r name ip port; do
        port_free "$ip" "$port" || die "$name: $ip:$port is already in use (set BENCH_PORT_* / BENCH_AGENT_IP)"
    done <<EOF
zabbix_agentd 127.0.0.1 $PORT_ZABBIX
node_exporter 127.0.0.1 $PORT_NODE
nrpe 127.0.0.1 $PORT_NRPE
pihealth-agent $AGENT_IP 8000
pihealth-agent $AGENT_IP 8001
EOF

    say "building: cargo build --release; cargo bench --bench peers --no-run ..."
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
    # The bench executable, run directly below (what `cargo bench --bench
    # peers -- ARGS` runs, without a rebuild in the middle of the run if
    # someone edits the tree meanwhile); it is also NRPE's subreaper.
    PEERS=$(cd "$ROOT" && cargo bench --bench peers --no-run --quiet --message-format=json |
        sed -n 's/.*"executable":"\([^"]*\/peers-[^"]*\)".*/\1/p' | tail -n 1) ||
        die "cargo bench --bench peers --no-run failed"
    [[ -x $BIN ]] || die "$BIN missing after the build"
    [[ -n $PEERS && -x $PEERS ]] || die "cannot find the peers bench executable"

    local t_start=$SECONDS
    say "uptime at the start: $(uptime)"

    # zabbix_agentd: passive checks only, foreground.
    mkdir -p "$TMP/zabbix"
    cat >"$TMP/zabbix/zabbix_agentd.conf" <<EOF
PidFile=$TMP/zabbix/zabbix_agentd.pid
LogType=file
LogFile=$TMP/zabbix/zabbix_agentd.log
Server=127.0.0.1
ServerActive=
ListenIP=127.0.0.1
ListenPort=$PORT_ZABBIX
AllowRoot=1
EOF
    start zabbix_agentd "$TMP/zabbix/stdout.log" 127.0.0.1 "$PORT_ZABBIX" \
        /usr/sbin/zabbix_agentd -f -c "$TMP/zabbix/zabbix_agentd.conf"
    local zabbix=$STARTED
    sleep 0.5 # its workers start just after the listener
    read -r -a CHILD_PIDS < <(children_of "$zabbix" | tr '\n' ' '; echo)

    # node_exporter: the packaged defaults (ARGS="" in /etc/default).
    mkdir -p "$TMP/node"
    start node_exporter "$TMP/node/stderr.log" 127.0.0.1 "$PORT_NODE" \
        /usr/bin/prometheus-node-exporter --web.listen-address="127.0.0.1:$PORT_NODE"
    local node=$STARTED

    # nrpe: no SSL (-n), no fork into the background (-f); drops to user
    # nagios. It double-forks each connection's handler (init would inherit
    # it): under a subreaper, handlers and plugins are reaped, and counted, by it.
    mkdir -p "$TMP/nrpe"
    cat >"$TMP/nrpe/nrpe.cfg" <<EOF
log_facility=daemon
debug=0
pid_file=$TMP/nrpe/nrpe.pid
server_address=127.0.0.1
server_port=$PORT_NRPE
nrpe_user=nagios
nrpe_group=nagios
allowed_hosts=127.0.0.1
dont_blame_nrpe=0
allow_bash_command_substitution=0
command_timeout=60
connection_timeout=300
command[check_load]=$PLUGINS/check_load -r -w 15,10,5 -c 30,25,20
command[check_disk]=$PLUGINS/check_disk -w 20% -c 10% -p /
command[check_users]=$PLUGINS/check_users -w 5 -c 10
command[check_procs]=$PLUGINS/check_procs -w 250 -c 400
command[check_swap]=$PLUGINS/check_swap -w 20% -c 10% -n ok
EOF
    start nrpe "$TMP/nrpe/stderr.log" 127.0.0.1 "$PORT_NRPE" \
        "$PEERS" --subreaper /usr/sbin/nrpe -n -f -c "$TMP/nrpe/nrpe.cfg"
    REAPER=$STARTED
    local reaper=$STARTED nrpe
    nrpe=$(children_of "$reaper" | awk '{ print $1 }')
    [[ -n $nrpe ]] || die "nrpe: no process under its subreaper $reaper"
    PIDS+=("$nrpe")

    # pihealth agent: the six standard scripts, every $INTERVAL, with their
    # sampling windows shortened so that a run ends within the interval.
    local dir=$TMP/pihealth t
    mkdir -p "$dir"
    "$BIN" keygen "$dir/pihealth.key" >/dev/null || die "pihealth keygen failed"
    {
        echo "name: bench-peers"
        echo "master: 127.0.40.1:8080" # nobody there: heartbeats fail fast, once an hour
        echo "control_listen: $AGENT_IP:8000"
        echo "data_listen: $AGENT_IP:8001"
        echo "key_file: $dir/pihealth.key"
        echo "log_dir: $dir/log"
        echo "backup_dir: $dir/logbackup"
        echo "heartbeat_interval: 1h"
        echo "collectors:"
        for t in cpu mem disk proc users sysinfo; do
            echo "  - {name: $t, command: $ROOT/scripts/$t.sh, interval: $INTERVAL}"
        done
    } >"$dir/agent.yaml"
    port_free "$AGENT_IP" 8001 || die "pihealth agent: $AGENT_IP:8001 is already in use"
    start "pihealth agent" "$dir/agent.log" "$AGENT_IP" 8000 \
        env -C "$dir" RUST_LOG=warn TMPDIR="$dir" PIHEALTH_CPU_WINDOW=0.1 PIHEALTH_PROC_RECHECK=0.1 \
        "$BIN" agent -c "$dir/agent.yaml"
    local agent=$STARTED
    say "started: zabbix_agentd $zabbix (workers ${CHILD_PIDS[*]}), node_exporter $node, nrpe $nrpe (subreaper $reaper), pihealth agent $agent"

    local notes=(
        "Versions: $(/usr/sbin/zabbix_agentd -V | sed -n 1p); $(/usr/bin/prometheus-node-exporter --version 2>&1 | sed -n 1p); NRPE $({ /usr/sbin/nrpe -V 2>&1 || true; } | sed -n 's/^Version: //p'); monitoring-plugins $(dpkg-query -W -f '${Version}' monitoring-plugins-basic 2>/dev/null || echo '?'); pihealth $(version_of_tree)."
        "Machine: $(nproc) cores ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), Linux $(uname -r); $(grep -c . <(ps -e -o pid=)) processes running at the start."
    )
    local args=(
        --zabbix "$zabbix@127.0.0.1:$PORT_ZABBIX"
        --node-exporter "$node@127.0.0.1:$PORT_NODE"
        --nrpe "$nrpe@127.0.0.1:$PORT_NRPE" --nrpe-reaper "$reaper"
        --pihealth "$agent@$AGENT_IP:8000" --key "$dir/pihealth.key"
        --n "$N" --pull-period "$INTERVAL" --collect-interval "$INTERVAL"
        --out "$OUT"
    )
    for t in "${notes[@]}"; do args+=(--note "$t"); done
    say "measuring ($PEERS) ..."
    (cd "$ROOT" && timeout 270 "$PEERS" "${args[@]}" --bench) ||
        die "the measurement failed (see above)"
    say "uptime at the end: $(uptime)"
    say "done in $((SECONDS - t_start)) s after the build; table in $OUT"
}

main "$@"
