# pihealth task recipes. `just` is optional sugar over cargo; install it with
#   cargo install just
# then run `just` (or `just --list`) to see the recipes.
#
# The daemons and tools read config/master.yaml and config/agent.yaml, and
# both need the shared key: run `just keygen` once first.

# List the recipes.
default:
    @just --list

# Run the master daemon with config/master.yaml.
run-master:
    cargo run --release -- master -c config/master.yaml

# Run the agent daemon with config/agent.yaml (the lean binary the unit runs).
run-agent:
    cargo run --release --bin pihealth-agent -- -c config/agent.yaml

# A master and 3 agents on 127.0.0.x in a temporary directory (extra args, e.g. --agents 5 --seconds 20).
demo *args:
    cargo run --release -- demo {{args}}

# One pull cycle now, then exit (extra args, e.g. --host pi1).
pull *args:
    cargo run --release -- pull -c config/master.yaml {{args}}

# Print one host's log of one type, oldest first (extra args, e.g. --since 1h --follow).
logs host type *args:
    cargo run --release -- logs -c config/master.yaml {{host}} {{type}} {{args}}

# Table of agents: up/down, last heartbeat, last pull, pending alarms.
status:
    cargo run --release -- status -c config/master.yaml

# Recent alarms, newest last (extra args, e.g. --since 1d).
alarms *args:
    cargo run --release -- alarms -c config/master.yaml {{args}}

# Write a new shared key to config/pihealth.key (mode 0600) unless it exists.
keygen:
    @if [ -e config/pihealth.key ]; then echo "config/pihealth.key exists; not overwriting it"; else cargo run --release -- keygen config/pihealth.key; fi

# Screenshot of the status page of a running demo, with headless Chromium.
screenshot out="status-page.png":
    scripts/screenshot-status.sh {{out}}

# The Debian package, target/debian/pihealth_*.deb (needs `cargo install cargo-deb`).
deb *args:
    scripts/deb/build.sh {{args}}

# All tests (the README's test command).
test:
    cargo test --all-targets

# Performance benchmarks (SPEC §9).
bench:
    cargo bench --bench cluster

# Formatting and clippy, warnings as errors.
lint:
    cargo fmt --all -- --check && cargo clippy --all-targets -- -D warnings
