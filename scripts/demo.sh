#!/usr/bin/env bash
# make demo: a simulated cluster and Azure tenant on loopback (lapse-sandbox), the real
# operator, and one short grant followed from apply to lapse, narrated with kubectl output and
# a workload's own view of Azure; then approval, auto-approval and escalation with kubectl
# lapse; then the estate audit (kubectl lapse audit) of the tenant's standing privileges.
# Needs the Rust toolchain and kubectl; leaves nothing running.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
CARGO=${CARGO:-cargo}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
GRANT_NS=demo
GRANT=nightly-backup
SA=backup-runner
IDENTITY=backup-runner

if [[ -t 1 ]]; then B=$'\033[1m' D=$'\033[2m' N=$'\033[0m'; else B='' D='' N=''; fi
START=$SECONDS
say() { printf '\n%s[+%3ds] %s%s\n' "$B" $((SECONDS - START)) "$*" "$N"; }
# Shows a command as a user would type it, then runs it.
show() { printf '%s$ %s%s\n' "$D" "$*" "$N"; "$@"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

command -v kubectl >/dev/null || die "kubectl is not on PATH"

STATE=$(mktemp -d "${TMPDIR:-/tmp}/lapse-demo.XXXXXX")
SANDBOX_PID='' OPERATOR_PID=''
cleanup() {
  local rc=$?
  # SIGTERM: both shut down gracefully (the operator releases its leader Lease).
  for pid in $OPERATOR_PID $SANDBOX_PID; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in $OPERATOR_PID $SANDBOX_PID; do wait "$pid" 2>/dev/null || true; done
  if pgrep -P $$ >/dev/null; then
    echo "demo: processes still running after cleanup:" >&2
    pgrep -a -P $$ >&2 || true
    rc=1
  fi
  if [[ $rc -ne 0 && -d $STATE ]]; then
    echo "demo: failed; the last operator log lines:" >&2
    tail -n 30 "$STATE/operator.log" 2>/dev/null >&2 || true
  fi
  rm -rf "$STATE"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port nothing listens on (bash's /dev/tcp: no extra tools).
free_port() {
  local port
  for _ in $(seq 50); do
    port=$((20000 + RANDOM % 30000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
  done
  die "no free local port found"
}

# GET /readyz over bash's /dev/tcp; true on 200.
ready() {
  local line
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
  read -r line <&3 || true
  exec 3<&-
  [[ $line == *" 200 "* ]]
}

# GET /metrics over bash's /dev/tcp; prints the body.
metrics() {
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
  sed '1,/^\r*$/d' <&3
  exec 3<&-
}

probe() {
  printf '%s$ lapse-sandbox probe --namespace %s --service-account %s --identity %s --resource …/storageAccounts/lapsedemodata%s\n' \
    "$D" "$GRANT_NS" "$SA" "$IDENTITY" "$N"
  "$BIN/lapse-sandbox" probe --state-dir "$STATE" --namespace "$GRANT_NS" \
    --service-account "$SA" --identity "$IDENTITY" --resource "$STORAGE"
}

say "Building lapse-sandbox, lapse-operator and kubectl-lapse"
"$CARGO" build --quiet -p lapse-sandbox -p lapse-operator -p kubectl-lapse
# kubectl finds the plugin on PATH: `kubectl lapse` below is crates/kubectl-lapse.
export PATH=$BIN:$PATH

say "Starting the sandbox: sim-kube + sim-azure on loopback, lapse CRDs installed"
"$BIN/lapse-sandbox" up --state-dir "$STATE" --apply config/crd >"$STATE/sandbox.log" 2>&1 &
SANDBOX_PID=$!
for _ in $(seq 300); do
  [[ -e $STATE/ready ]] && break
  kill -0 "$SANDBOX_PID" 2>/dev/null || { cat "$STATE/sandbox.log" >&2; die "the sandbox exited"; }
  sleep 0.1
done
[[ -e $STATE/ready ]] || die "the sandbox was not ready after 30s"
export KUBECONFIG=$STATE/kubeconfig
SUB=$(sed -n "s/^export AZURE_SUBSCRIPTION_ID='\(.*\)'$/\1/p" "$STATE/azure.env")
STORAGE=/subscriptions/$SUB/resourceGroups/lapse-demo-rg/providers/Microsoft.Storage/storageAccounts/lapsedemodata
show kubectl get crds

say "Starting lapse-operator against it (the sandbox's azure.env, no flags)"
METRICS_PORT=$(free_port)
HEALTH_PORT=$(free_port)
(
  set -a
  # shellcheck disable=SC1091
  . "$STATE/azure.env"
  set +a
  KUBECONFIG=$STATE/kubeconfig LAPSE_CLUSTER_NAME=demo POD_NAMESPACE=kube-system \
    LAPSE_METRICS_ADDR=127.0.0.1:$METRICS_PORT LAPSE_HEALTH_ADDR=127.0.0.1:$HEALTH_PORT \
    LAPSE_LOG_FORMAT=json exec "$BIN/lapse-operator" run
) >"$STATE/operator.log" 2>&1 &
OPERATOR_PID=$!
# Remembered, not probed again: one 200 is enough, and a second probe racing the first answer's
# connection teardown can fail on a loaded machine.
UP=''
for _ in $(seq 300); do
  ready "$HEALTH_PORT" 2>/dev/null && { UP=1; break; }
  kill -0 "$OPERATOR_PID" 2>/dev/null || { cat "$STATE/operator.log" >&2; die "the operator exited"; }
  sleep 0.1
done
[[ -n $UP ]] || die "the operator was not ready after 30s"
echo "operator ready: /readyz on 127.0.0.1:$HEALTH_PORT, /metrics on 127.0.0.1:$METRICS_PORT"

say "A platform team's AccessPolicy, and the workload's ServiceAccount"
show kubectl apply -f config/samples/policy.yaml -f config/samples/serviceaccount.yaml
show kubectl get accesspolicies

say "Before any grant, the workload cannot even get an Azure token"
if probe; then die "the workload had access before any grant"; fi

say "The team applies a 20-second AccessGrant"
show kubectl apply -f config/samples/grant.yaml
show kubectl -n "$GRANT_NS" wait --for=condition=Ready "accessgrant/$GRANT" --timeout=60s
show kubectl -n "$GRANT_NS" get accessgrants -o wide

say "While the lease is Active, the workload reads the storage account"
probe || die "the workload was refused while the grant was Active"
show kubectl -n "$GRANT_NS" describe accessgrant "$GRANT"

say "Waiting for the lease to lapse"
show kubectl -n "$GRANT_NS" wait --for=jsonpath='{.status.phase}'=Expired "accessgrant/$GRANT" --timeout=90s
show kubectl -n "$GRANT_NS" get accessgrants -o wide

say "After the lapse, the same workload is refused again"
if probe; then die "the workload still had access after the lease lapsed"; fi

say "What Azure saw: every write the operator made (lapse-sandbox audit --writes)"
"$BIN/lapse-sandbox" audit --state-dir "$STATE" --writes | tee "$STATE/writes"
puts=$(grep -c ' PUT ' "$STATE/writes" || true)
deletes=$(grep -c ' DELETE .* 200$' "$STATE/writes" || true)
[[ $puts -eq 2 && $deletes -eq 2 ]] ||
  die "expected one PUT and one DELETE for each of the 2 Azure objects, saw $puts PUTs and $deletes DELETEs"

say "The operator's own measure of the lapse (lease end → Azure DELETE acknowledged)"
metrics "$METRICS_PORT" | grep -E '^lapse_(overstay_seconds_(count|sum)|grants\{phase="Expired"\}) '

say "Approval: a namespace whose access needs bob's yes (and the admission policies that make it believable)"
show kubectl apply -f config/admission/approval.yaml -f config/samples/approval.yaml
RG=/subscriptions/$SUB/resourceGroups/lapse-demo-rg
MI=$RG/providers/Microsoft.ManagedIdentity/userAssignedIdentities/$IDENTITY

say "alice asks for 10 minutes of Reader; the grant waits for an approver"
show kubectl lapse -n demo-ops --as alice@example.com request restore-test --identity "$MI" \
  --role "Reader@$RG" --for 10m --justification "OPS-77 restore test"
show kubectl lapse -n demo-ops list
show kubectl lapse -n demo-ops --as bob@example.com pending

say "alice cannot approve her own request (exit 3); bob can"
if show kubectl lapse -n demo-ops --as alice@example.com approve restore-test; then
  die "alice approved her own request"
fi
show kubectl lapse -n demo-ops --as bob@example.com approve restore-test --comment "LGTM, OPS-77"
show kubectl -n demo-ops wait --for=condition=Ready accessgrant/restore-test --timeout=60s
show kubectl -n demo-ops get accessgrants,accessapprovals

say "Done with it early: alice revokes, the role assignment goes at once"
show kubectl lapse -n demo-ops --as alice@example.com revoke restore-test
show kubectl -n demo-ops wait --for=jsonpath='{.status.phase}'=Revoked accessgrant/restore-test --timeout=60s
show kubectl lapse -n demo-ops describe restore-test
echo "the audit trail of it, one JSON line per transition (docs/audit.md):"
grep -F '"target":"lapse::audit"' "$STATE/operator.log" | grep -F 'restore-test' |
  sed -n 's/.*"message":"\([^"]*\)".*"requester":"\([^"]*\)".*"approvals":"\([^"]*\)".*/  \1  [requester \2; approvals: \3]/p' || true

say "Workflows: short Reader requests approve themselves; unanswered ones escalate to carol after 6 s"
show kubectl apply -f config/samples/workflows.yaml
show kubectl lapse -n demo-flows --as alice@example.com policies

say "alice asks for 10 minutes of Reader: auto-approve rule 0 covers it, no human involved"
show kubectl lapse -n demo-flows --as alice@example.com request quick --identity "$MI" \
  --role "Reader@$RG" --for 10m --justification "OPS-78 read the backup logs"
show kubectl -n demo-flows wait --for=condition=Ready accessgrant/quick --timeout=60s
approved() {
  kubectl -n demo-flows get accessgrant "$1" -o jsonpath='{.status.conditions[?(@.type=="Approved")].message}'
}
printf '%s$ kubectl -n demo-flows get accessgrant quick -o jsonpath='"'"'{.status.conditions[?(@.type=="Approved")].message}'"'"'%s\n' "$D" "$N"
approved quick; echo
[[ $(approved quick) == "auto-approved by rule 0 of AccessPolicy demo-flows: Reader for at most 15m" ]] ||
  die "the quick grant was not auto-approved by rule 0"

say "alice asks for 45 minutes: no rule covers it, so it waits for bob, and for carol once 6 s have passed"
show kubectl lapse -n demo-flows --as alice@example.com request long --identity "$MI" \
  --role "Reader@$RG" --for 45m --justification "OPS-79 restore drill"
echo "Approved: $(approved long)"
echo "carol's tier is not open yet: kubectl lapse refuses (the operator would never count it)"
if show kubectl lapse -n demo-flows --as carol@example.com approve long; then
  die "carol approved before her escalation tier opened"
fi
for _ in $(seq 150); do
  [[ $(approved long) == *"escalated since"* ]] && break
  sleep 0.1
done
[[ $(approved long) == *"escalated since"* ]] || die "the long grant never escalated"
echo "Approved: $(approved long)"
show kubectl lapse -n demo-flows --as carol@example.com approve long --comment "bob is away; OPS-79 is fine"
show kubectl -n demo-flows wait --for=condition=Ready accessgrant/long --timeout=60s
show kubectl -n demo-flows get accessgrants,accessapprovals

say "The estate audit: what in the tenant escapes lapse's lifecycle (kubectl lapse audit, as the sandbox's auditor)"
(
  # Reader on the subscription and Graph Application.Read.All; the sandbox's endpoints and CA.
  set -a
  # shellcheck disable=SC1091
  . "$STATE/auditor.env"
  set +a
  show kubectl lapse audit
  rc=0
  kubectl lapse audit --fail-on StandingRoleAssignment,LongLivedSecret >/dev/null 2>&1 || rc=$?
  [[ $rc -eq 3 ]] || die "kubectl lapse audit --fail-on StandingRoleAssignment,LongLivedSecret exited $rc, not 3"
  echo "kubectl lapse audit --fail-on StandingRoleAssignment,LongLivedSecret exits 3: a CI gate stops here"
)

say "Done: one PUT and one DELETE per Azure object, and the standing privileges left to replace; stopping the operator and the sandbox"
