#!/usr/bin/env bash
# `make e2e-rehearse`: runs `make e2e-external` against a sandbox that poses as a real cluster
# and tenant. The suites see only the settings a user would export (docs/testing.md): no
# request log, no fault injection, a stretched clock and polled propagation. Use it to check
# the external path before spending a real tenant's time on it.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO="${CARGO:-cargo}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lapse-target}"
"$CARGO" build --quiet --workspace --bins

state="$(mktemp -d -t lapse-rehearse-XXXXXX)"
"$CARGO_TARGET_DIR/debug/lapse-sandbox" up --state-dir "$state" >"$state/sandbox.log" 2>&1 &
sandbox=$!
trap 'kill "$sandbox" 2>/dev/null; wait "$sandbox" 2>/dev/null; rm -rf "$state"' EXIT
for _ in $(seq 600); do
  [ -e "$state/ready" ] && break
  kill -0 "$sandbox" 2>/dev/null || { cat "$state/sandbox.log"; exit 1; }
  sleep 0.1
done
[ -e "$state/ready" ] || { echo "lapse-sandbox not ready after 60 s" >&2; exit 1; }

set -a
# shellcheck disable=SC1091
. "$state/azure.env"
set +a
export KUBECONFIG="$state/kubeconfig"
export LAPSE_E2E_RESOURCE_GROUP=lapse-demo-rg
export LAPSE_E2E_STORAGE_ACCOUNT=lapsedemodata
export LAPSE_E2E_IDENTITIES=backup-runner,report-agent
export LAPSE_E2E_APPLICATION=lapse-demo-app
export LAPSE_E2E_TIME_SCALE="${LAPSE_E2E_TIME_SCALE:-2}"
export LAPSE_E2E_PROPAGATION="${LAPSE_E2E_PROPAGATION:-20s}"
scripts/e2e-external.sh "$@"
