#!/usr/bin/env bash
# Build the Debian package: target/debian/pihealth_VERSION_ARCH.deb.
#
# Needs cargo-deb (`cargo install cargo-deb`). The package's configs are
# config/master.yaml and config/agent.yaml with the paths made absolute
# for where the package puts things, so they work as installed whatever
# the working directory (they are written to target/deb-etc/ first, which
# the asset list in Cargo.toml names). Extra arguments go to `cargo deb`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

out=target/deb-etc
mkdir -p "$out"
header='# Installed by the pihealth Debian package: every path below is absolute
# (key in /etc/pihealth, data in /var/lib/pihealth, scripts in
# /usr/share/pihealth/scripts), so it works from any working directory.
#'

# Each substitution must hit: a config that no longer has the line would
# otherwise ship with a relative path silently.
substitute() { # file pattern replacement
    local file=$1 pattern=$2 replacement=$3
    grep -q -- "$pattern" "$file" || {
        echo "build.sh: no line matching '$pattern' in $file; update scripts/deb/build.sh" >&2
        exit 1
    }
    sed -i "s|$pattern|$replacement|" "$file"
}

{ echo "$header"; cat config/master.yaml; } >"$out/master.yaml"
substitute "$out/master.yaml" '^key_file: pihealth.key$' 'key_file: /etc/pihealth/pihealth.key'
substitute "$out/master.yaml" '^log_dir: \.\./log$' 'log_dir: /var/lib/pihealth/log'
substitute "$out/master.yaml" '^backup_dir: \.\./logbackup$' 'backup_dir: /var/lib/pihealth/logbackup'

# The agent keeps its own directory: on a host that runs both daemons its
# unpulled logs stay apart from the master's archives.
{ echo "$header"; cat config/agent.yaml; } >"$out/agent.yaml"
substitute "$out/agent.yaml" '^key_file: pihealth.key$' 'key_file: /etc/pihealth/pihealth.key'
substitute "$out/agent.yaml" '^log_dir: \.\./log$' 'log_dir: /var/lib/pihealth/agent/log'
substitute "$out/agent.yaml" '^backup_dir: \.\./logbackup$' 'backup_dir: /var/lib/pihealth/agent/logbackup'
# The shipped collectors are built in; scripts are named only where the
# config tells how to switch to them, and those must point where they live.
sed -i 's|command: \.\./scripts/|command: /usr/share/pihealth/scripts/|g' "$out/agent.yaml"

if grep -nE '^[a-z_]+: (config/|log|scripts/|\.\./|pihealth\.key)|command: (\.\./)?scripts/' "$out"/*.yaml; then
    echo "build.sh: a relative path is left in the package's configs (above)" >&2
    exit 1
fi

cargo deb "$@"
