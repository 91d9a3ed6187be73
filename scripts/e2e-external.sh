#!/usr/bin/env bash
# `make e2e-external`: the end-to-end suites against the cluster and Azure tenant given by the
# environment (docs/testing.md lists every setting). Tests that need what this target lacks are
# left out by nextest filters, so its summary counts them as skipped, never as passed:
# - tests that need the sandbox's powers: the `external` profile's default-filter
#   (.config/nextest.toml);
# - tests that need an optional fixture that is not set: added here, each with its reason.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO="${CARGO:-cargo}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lapse-target}"

exclude=()
skip() { # $1: exact test name, $2: why
    exclude+=("test(=$1)")
    printf 'skipping %s: %s\n' "$1" "$2" >&2
}
if [ -z "${LAPSE_E2E_APPLICATION:-}" ]; then
    skip an_application_gets_a_graph_credential_and_roles_on_its_service_principal \
        "needs an app registration the operator owns (LAPSE_E2E_APPLICATION)"
fi
IFS=, read -r -a identities <<<"${LAPSE_E2E_IDENTITIES:-}"
if [ "${#identities[@]}" -lt 2 ]; then
    skip startup_sweep_deletes_objects_of_grants_deleted_while_down \
        "the orphaned FIC must sit on an identity no live grant names: needs two LAPSE_E2E_IDENTITIES"
fi

filter=()
if [ "${#exclude[@]}" -gt 0 ]; then
    joined=$(IFS='|'; echo "${exclude[*]}")
    filter=(-E "not ($joined)")
fi

"$CARGO" build --workspace --bins
LAPSE_E2E_TARGET=external exec "$CARGO" nextest run -p lapse-e2e --profile external \
    --no-fail-fast "${filter[@]}" "$@"
