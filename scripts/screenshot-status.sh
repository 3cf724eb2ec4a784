#!/usr/bin/env bash
# screenshot-status.sh — a PNG of the master's status page as a browser
# draws it, to check its looks after a change.
#
# Builds the release binary, runs `pihealth demo` (a master and 3 agents on
# 127.0.0.x, page on http://127.0.0.1:18082/) in the background, waits until
# the page has chart lines for every host, screenshots it with headless
# Chromium, stops the demo and prints the PNG's path.
#
# Usage:  scripts/screenshot-status.sh [OUT.png]     (default: status-page.png)
#
# Environment:
#   PIHEALTH_URL     screenshot this page instead of starting the demo
#                    (e.g. http://127.0.0.1:8082/ of a running master)
#   PIHEALTH_WAIT    seconds to wait for chart data (default 60)
#   PIHEALTH_SETTLE  seconds of demo history to collect before the shot, so
#                    the charts show a line rather than a dot (default 45)
#   CHROMIUM         the browser binary (default: chromium, chromium-browser
#                    or google-chrome, whichever exists; on Debian, as root,
#                    `apt-get install chromium` is run when none does)
set -euo pipefail

out=${1:-status-page.png}
[[ $out == /* ]] || out=$PWD/$out
root=$(cd "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
wait_secs=${PIHEALTH_WAIT:-60}
settle=${PIHEALTH_SETTLE:-45}
url=${PIHEALTH_URL:-}

die() {
    echo "screenshot-status: $*" >&2
    exit 1
}

find_browser() {
    if [[ -n ${CHROMIUM:-} ]]; then
        command -v "$CHROMIUM" || die "CHROMIUM=$CHROMIUM not found"
        return
    fi
    local b
    for b in chromium chromium-browser google-chrome; do
        if command -v "$b" >/dev/null 2>&1; then
            command -v "$b"
            return
        fi
    done
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "screenshot-status: installing chromium (apt-get)" >&2
        apt-get update -qq >&2 </dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2 </dev/null
        command -v chromium && return
    fi
    die "no chromium found: apt-get install chromium (or set CHROMIUM)"
}

# The page at $1, or nothing (curl if present, else bash's /dev/tcp).
fetch() {
    local target=$1
    if command -v curl >/dev/null 2>&1; then
        curl -fsS --max-time 5 "$target" 2>/dev/null || true
        return
    fi
    local rest=${target#http://} host port path
    host=${rest%%/*}
    path=/${rest#*/}
    [[ $rest == */* ]] || path=/
    port=${host##*:}
    host=${host%:*}
    (
        exec 3<>"/dev/tcp/$host/$port" || exit 0
        printf 'GET %s HTTP/1.1\r\nHost: %s:%s\r\n\r\n' "$path" "$host" "$port" >&3
        timeout 5 cat <&3 | sed '1,/^\r$/d'
    ) 2>/dev/null || true
}

browser=$(find_browser)
demo_pid=
demo_dir=
cleanup() {
    if [[ -n $demo_pid ]] && kill -0 "$demo_pid" 2>/dev/null; then
        kill -TERM "$demo_pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$demo_pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$demo_pid" 2>/dev/null || true
        wait "$demo_pid" 2>/dev/null || true
    fi
    if [[ -n $demo_dir ]]; then
        rm -rf "$demo_dir"
    fi
}
trap cleanup EXIT

if [[ -z $url ]]; then
    echo "screenshot-status: building the release binary" >&2
    (cd "$root" && cargo build --release --quiet)
    demo_dir=$(mktemp -d "${TMPDIR:-/tmp}/pihealth-screenshot.XXXXXX")
    "$root/target/release/pihealth" demo --agents 3 --seconds 90 --keep "$demo_dir/demo" \
        >"$demo_dir/demo.out" 2>&1 &
    demo_pid=$!
    started=$SECONDS
    url=http://127.0.0.1:18082/
    hosts=3
else
    started=$((SECONDS - settle))
    hosts=1
fi

# Every host has three charts; wait until each of them has a line.
echo "screenshot-status: waiting for chart data on $url" >&2
deadline=$((SECONDS + wait_secs))
while :; do
    page=$(fetch "$url")
    lines=$(grep -o '<polyline' <<<"$page" | wc -l || true)
    ((lines >= 3 * hosts && SECONDS - started >= settle)) && break
    if [[ -n $demo_pid ]] && ! kill -0 "$demo_pid" 2>/dev/null; then
        cat "$demo_dir/demo.out" >&2 || true
        die "the demo ended before the page had chart data"
    fi
    ((SECONDS < deadline + settle)) || die "no chart data on $url after ${wait_secs}s (${lines} chart lines)"
    sleep 1
done

# The page refreshes itself every 10 s; --virtual-time-budget lets it
# settle (fonts, layout) without waiting for a refresh.
profile=$(mktemp -d "${TMPDIR:-/tmp}/pihealth-chromium.XXXXXX")
if ! "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --user-data-dir="$profile" --virtual-time-budget=2000 \
    --run-all-compositor-stages-before-draw \
    --window-size=1280,1600 --screenshot="$out" "$url" >"$profile/chromium.log" 2>&1; then
    cat "$profile/chromium.log" >&2
    rm -rf "$profile"
    die "chromium failed"
fi
rm -rf "$profile"
[[ -s $out ]] || die "chromium wrote no screenshot"
echo "$out"
