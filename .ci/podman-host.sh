#!/usr/bin/env bash
# Host settings podman needs on the CI machines, made before scripts/container-test.sh runs (.ci/run
# calls this). On these machines podman runs containers only with the runc runtime (not crun) and
# without default ulimits: `default_ulimits = []` under [containers]. A machine where podman runs
# containers as installed needs none of this, and container-test.sh does not change the host's
# podman configuration itself.
#
# The settings go to a drop-in of their own, /etc/containers/containers.conf.d/50-bus-mcp-ci.conf
# (read after /etc/containers/containers.conf, see containers.conf(5)), so no existing file is
# edited. Idempotent. Usage: bash .ci/podman-host.sh (as root)
set -euo pipefail

readonly DROP_IN=/etc/containers/containers.conf.d/50-bus-mcp-ci.conf

if [[ $EUID -ne 0 ]]; then echo "podman-host: needs root (writes $DROP_IN)" >&2; exit 1; fi
command -v runc >/dev/null || { echo "podman-host: runc is not installed (.ci/run installs it: apt-get install runc)" >&2; exit 1; }

mkdir -p "$(dirname "$DROP_IN")"
cat >"$DROP_IN.tmp" <<'CONF'
# Written by .ci/podman-host.sh: what podman needs on the bus-mcp CI machines.
[containers]
default_ulimits = []

[engine]
runtime = "runc"
CONF
mv "$DROP_IN.tmp" "$DROP_IN"
echo "podman-host: $DROP_IN: runtime runc, no default ulimits"
