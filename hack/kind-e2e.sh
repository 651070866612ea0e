#!/usr/bin/env bash
# The newcomer's flow, end to end, each step asserted (docs/kind.md walks through it):
#
#   build the image, create (or reuse) a kind cluster, load the image, install the operator
#   with the chart (or kustomize) -- webhook and attestation included -- and wait for it;
#   `kubectl apply -f examples/`; create a policy, a PimGroup on the `kubernetes` directory
#   and an EligibleAssignment; `kubectl pim activate --wait` as alice (impersonation), check
#   that alice cannot approve her own request, approve as bob, see the ClusterRoleBinding
#   name alice, deactivate early, and see her go from the binding.
#
# Usage:
#   hack/kind-e2e.sh [--install helm|kustomize] [--cluster NAME] [--keep]
#   hack/kind-e2e.sh --fake-apiserver [--install helm|kustomize]
#
# Kind mode needs docker, kind, kubectl and helm (kustomize: kubectl only) and kubectl-pim on
# PATH (or KUBECTL_PIM_BIN). It reuses the cluster if it exists and leaves it running.
#
# --fake-apiserver runs every step it can without Docker, against the project's fake API
# server (crates/pim-testkit/src/fake_apiserver), so that CI tests this script. What cannot run there is replaced
# by the closest real thing, and the step says so:
#   - the image: the built binaries (PIM_OPERATOR_BIN, KUBECTL_PIM_BIN, FAKE_APISERVER_BIN;
#     unset: `cargo build --bin pim-operator --bin fake-apiserver` builds them);
#   - the cluster: a fake-apiserver process, which calls the admission webhooks;
#   - `helm install`: `helm template | kubectl apply --server-side` (the same manifests);
#   - the pod: pim-operator run locally with the config the chart installed (its ConfigMap),
#     as the chart's ServiceAccount (a kubeconfig with `as:`), its webhook and metrics on free
#     local ports that stand in for the Service and the container ports.
# The fake server enforces no RBAC, so `kubectl auth can-i` checks run in kind mode only, and
# serves no OpenAPI documents, so kubectl applies with --validate=false there.
#
# Environment: PIM_E2E_REQUESTER (alice@contoso.com), PIM_E2E_APPROVER (bob@contoso.com),
# PIM_E2E_TIMEOUT (seconds each wait may take, 180), KUBECTL, HELM, KIND, DOCKER (the tools).

set -euo pipefail

MODE=kind
INSTALL=helm
CLUSTER=pim-e2e
KEEP=0
usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; }
while (($#)); do
    case $1 in
        --fake-apiserver) MODE=fake ;;
        --install) INSTALL=${2:-}; shift ;;
        --install=*) INSTALL=${1#--install=} ;;
        --cluster) CLUSTER=${2:-}; shift ;;
        --cluster=*) CLUSTER=${1#--cluster=} ;;
        --keep) KEEP=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "kind-e2e: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case $INSTALL in
    helm | kustomize) ;;
    *) echo "kind-e2e: --install must be helm or kustomize, not '$INSTALL'" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAMESPACE=pim-system
RELEASE=pim-operator
IMAGE=pim-operator:0.1.0 # the chart's appVersion and the kustomize base's tag
REQUESTER=${PIM_E2E_REQUESTER:-alice@contoso.com}
APPROVER=${PIM_E2E_APPROVER:-bob@contoso.com}
TIMEOUT=${PIM_E2E_TIMEOUT:-180}
KUBECTL=${KUBECTL:-kubectl}
HELM=${HELM:-helm}
KIND=${KIND:-kind}
DOCKER=${DOCKER:-docker}
GROUP=e2e-viewers

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pim-e2e.XXXXXX")
PIDS=()
STEP="start"
OPERATOR_LOG="$WORK/operator.log"

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if ((KEEP)); then
        echo "kind-e2e: kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

step() {
    STEP=$1
    printf '\n==> %s\n' "$1"
}
note() { printf '    %s\n' "$1"; }
ok() { printf '    ok: %s\n' "$1"; }

# What the operator said last, to explain a failure.
operator_logs() {
    if [[ $MODE == fake ]]; then
        if [[ -s $OPERATOR_LOG ]]; then
            echo "--- the operator's last log lines ($OPERATOR_LOG):"
            tail -n 30 "$OPERATOR_LOG"
        fi
    elif command -v "$KUBECTL" >/dev/null; then
        echo "--- the operator's last log lines:"
        "$KUBECTL" -n "$NAMESPACE" logs "deployment/$RELEASE" --tail=30 2>&1 || true
    fi
}

fail() {
    {
        printf '\nFAIL [%s]: %s\n' "$STEP" "$1"
        operator_logs
    } >&2
    exit 1
}

# Runs a command that must succeed; on failure shows it and what it printed.
run() {
    local out shown="$*"
    shown=${shown/#kc /kubectl }
    shown=${shown/#kubectl-pim /kubectl pim }
    note "\$ $shown"
    if ! out=$("$@" 2>&1); then
        fail "\`$shown\` failed: $out"
    fi
    if [[ -n $out ]]; then
        printf '%s\n' "$out" | sed 's/^/      /'
    fi
}

# wait_until WHAT COMMAND...: polls COMMAND until it succeeds; fails with its last output.
wait_until() {
    local what=$1 out deadline=$((SECONDS + TIMEOUT))
    shift
    note "check: $what"
    until out=$("$@" 2>&1); do
        if ((SECONDS >= deadline)); then
            fail "$what: not within ${TIMEOUT}s; last saw: ${out:-nothing}"
        fi
        sleep 0.5
    done
    ok "$what"
}

kc() { "$KUBECTL" "$@"; }

# The fake API server serves no /openapi, which kubectl's client-side validation downloads.
VALIDATE=()
if [[ $MODE == fake ]]; then
    VALIDATE=(--validate=false)
fi

# A TCP port nobody listens on (bash's /dev/tcp connects when somebody does), other than the
# ports given as arguments. It is taken below the kernel's ephemeral range: a port in that
# range can be handed to any process binding port 0 or connecting out between this check and
# the operator's bind, which once failed this script with "Address already in use".
free_port() {
    local port low
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || low=32768
    if ((low <= 11000)); then low=32768; fi
    while :; do
        port=$((10000 + RANDOM % (low - 10000)))
        if [[ " $* " != *" $port "* ]] && ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
}

# GET http://127.0.0.1:PORT/PATH; succeeds on a 200 and prints the answer.
http_ok() {
    local answer
    answer=$(
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
        cat <&3
    ) || return 1
    printf '%s\n' "$answer"
    [[ $answer == "HTTP/1."[01]" 200"* ]]
}

# --- predicates for wait_until: succeed when true, print what they saw ------------------

webhook_ca_injected() {
    local kind ca
    for kind in mutatingwebhookconfiguration validatingwebhookconfiguration; do
        ca=$(kc get "$kind" "$RELEASE" -o 'jsonpath={.webhooks[0].clientConfig.caBundle}')
        if [[ -z $ca ]]; then
            echo "$kind/$RELEASE has no caBundle yet"
            return 1
        fi
    done
}

request_phase_is() { # NAME PHASE...
    local name=$1 phase
    shift
    phase=$(kc get activationrequest "$name" -o 'jsonpath={.status.phase}')
    echo "activationrequest/$name is in phase '${phase:-none}'"
    local want
    for want in "$@"; do
        [[ $phase == "$want" ]] && return 0
    done
    return 1
}

# The users the PimGroup's ClusterRoleBindings name.
bound_users() {
    kc get clusterrolebindings -l "pim.dev/group" \
        -o 'jsonpath={range .items[*]}{range .subjects[*]}{.name}{"\n"}{end}{end}'
}

pimgroup_ready() { # NAME
    local ready
    ready=$(kc get pimgroup "$1" -o 'jsonpath={.status.conditions[?(@.type=="Ready")]}')
    echo "pimgroup/$1 Ready condition: ${ready:-none}"
    [[ $ready == *'"status":"True"'* ]]
}

assignment_effective() { # NAME
    local phase
    phase=$(kc get eligibleassignment "$1" -o 'jsonpath={.status.phase}')
    echo "eligibleassignment/$1 is in phase '${phase:-none}'"
    [[ $phase == Effective ]]
}

binding_names() { # USER: succeeds when a PimGroup binding names USER
    local users
    users=$(bound_users)
    echo "the PimGroup bindings name: ${users//$'\n'/ }"
    [[ $'\n'$users$'\n' == *$'\n'"$1"$'\n'* ]]
}

binding_does_not_name() { # USER
    ! binding_names "$1"
}

# --- steps ----------------------------------------------------------------------------

tools() {
    step "tools"
    local tool
    local needed=("$KUBECTL")
    if [[ $MODE == kind ]]; then
        needed+=("$DOCKER" "$KIND")
    fi
    if [[ $INSTALL == helm ]]; then
        needed+=("$HELM")
    fi
    for tool in "${needed[@]}"; do
        command -v "$tool" >/dev/null || fail "$tool is not installed (or not on PATH)"
        ok "$tool: $(command -v "$tool")"
    done
    # `kubectl pim` is the kubectl-pim binary on PATH.
    mkdir -p "$WORK/bin"
    if [[ -n ${KUBECTL_PIM_BIN:-} ]]; then
        ln -s "$KUBECTL_PIM_BIN" "$WORK/bin/kubectl-pim"
        PATH="$WORK/bin:$PATH"
    fi
    command -v kubectl-pim >/dev/null ||
        fail "kubectl-pim is not on PATH: \`cargo install --path . --bin kubectl-pim\` or set KUBECTL_PIM_BIN"
    ok "kubectl-pim: $(command -v kubectl-pim)"
}

build() {
    if [[ $MODE == kind ]]; then
        step "build the image $IMAGE (Dockerfile)"
        run "$DOCKER" build -t "$IMAGE" "$ROOT"
        return
    fi
    step "build (fake mode: the binaries stand in for the image)"
    if [[ -z ${PIM_OPERATOR_BIN:-} || -z ${FAKE_APISERVER_BIN:-} ]]; then
        run cargo build --manifest-path "$ROOT/Cargo.toml" \
            --bin pim-operator --bin fake-apiserver
        local target
        target=$(cargo metadata --manifest-path "$ROOT/Cargo.toml" --format-version 1 --no-deps |
            sed 's/.*"target_directory":"\([^"]*\)".*/\1/')
        PIM_OPERATOR_BIN=${PIM_OPERATOR_BIN:-$target/debug/pim-operator}
        FAKE_APISERVER_BIN=${FAKE_APISERVER_BIN:-$target/debug/fake-apiserver}
    fi
    local bin
    for bin in "$PIM_OPERATOR_BIN" "$FAKE_APISERVER_BIN"; do
        [[ -x $bin ]] || fail "$bin is not an executable"
        ok "$bin"
    done
}

cluster() {
    if [[ $MODE == kind ]]; then
        step "kind cluster $CLUSTER"
        local clusters
        clusters=$("$KIND" get clusters 2>/dev/null) || clusters=""
        if [[ $'\n'$clusters$'\n' == *$'\n'"$CLUSTER"$'\n'* ]]; then
            note "reusing the existing cluster $CLUSTER"
        else
            run "$KIND" create cluster --name "$CLUSTER" --wait 120s
        fi
        run "$KUBECTL" config use-context "kind-$CLUSTER"
        wait_until "the API server answers" kc get --raw /readyz

        step "load the image into the cluster"
        run "$KIND" load docker-image "$IMAGE" --name "$CLUSTER"
        return
    fi
    step "start the fake API server (fake mode: stands in for the kind cluster)"
    WEBHOOK_PORT=$(free_port)
    METRICS_PORT=$(free_port "$WEBHOOK_PORT")
    # The webhook Service is reached at the operator's local webhook port.
    "$FAKE_APISERVER_BIN" --kubeconfig "$WORK/kubeconfig" \
        --service "$NAMESPACE/$RELEASE-webhook=127.0.0.1:$WEBHOOK_PORT" \
        >"$WORK/apiserver.log" 2>&1 &
    PIDS+=($!)
    wait_until "the fake API server wrote its kubeconfig" test -s "$WORK/kubeconfig"
    export KUBECONFIG="$WORK/kubeconfig"
    wait_until "the API server answers" kc get --raw /readyz
    step "load the image (fake mode: nothing to load; the operator runs from $PIM_OPERATOR_BIN)"
}

# Where the API server calls the webhook from, the only source its port admits
# (docs/install.md, "Who may call the webhook"): kind's Docker network, or loopback for the
# fake API server (which does not enforce NetworkPolicy).
api_server_cidr() {
    if [[ $MODE == kind ]]; then
        docker network inspect kind -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' |
            tr ' ' '\n' | grep -m1 -F . ||
            fail "cannot read the IPv4 subnet of kind's Docker network"
    else
        echo 127.0.0.1/32
    fi
}

install() {
    step "install the operator with $INSTALL (webhook and attestation included)"
    local cidr
    cidr=$(api_server_cidr)
    note "the webhook's port admits the API server from $cidr"
    if [[ $INSTALL == helm ]]; then
        local values=(--set 'rbac.bindableClusterRoles={view}'
            --set "networkPolicy.apiServerCIDRs={$cidr}")
        if [[ $MODE == kind ]]; then
            run "$HELM" upgrade --install "$RELEASE" "$ROOT/charts/pim-operator" \
                --namespace "$NAMESPACE" --create-namespace "${values[@]}"
        else
            note "fake mode: \`helm template | kubectl apply --server-side\` stands in for helm install"
            printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n' "$NAMESPACE" \
                >"$WORK/namespace.yaml"
            run kc apply "${VALIDATE[@]}" --server-side -f "$WORK/namespace.yaml"
            run kc apply "${VALIDATE[@]}" --server-side -f "$ROOT/charts/pim-operator/crds/"
            "$HELM" template "$RELEASE" "$ROOT/charts/pim-operator" --namespace "$NAMESPACE" \
                "${values[@]}" >"$WORK/chart.yaml" 2>"$WORK/helm.err" ||
                fail "helm template failed: $(<"$WORK/helm.err")"
            run kc apply "${VALIDATE[@]}" --server-side -f "$WORK/chart.yaml"
        fi
    else
        run kc apply "${VALIDATE[@]}" --server-side -f "$ROOT/crds/"
        # The base admits nobody to the webhook until an overlay says where the API server is.
        mkdir -p "$WORK/overlay"
        local base
        # kustomize takes only relative paths to other kustomizations.
        base=$(realpath --relative-to="$WORK/overlay" "$ROOT/deploy/base")
        cat >"$WORK/overlay/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $base
patches:
  - target:
      kind: NetworkPolicy
      name: pim-operator
    patch: |-
      - op: replace
        path: /spec/ingress/1/from
        value:
          - ipBlock:
              cidr: $cidr
YAML
        run kc apply "${VALIDATE[@]}" --server-side -k "$WORK/overlay"
    fi
}

# Fake mode: run the operator as the Deployment's pod would.
run_operator_locally() {
    note "fake mode: pim-operator runs locally with the installed ConfigMap, as the ServiceAccount"
    # The ConfigMap the Deployment mounts (kustomize adds a hash to its name).
    local configmap
    configmap=$(kc -n "$NAMESPACE" get deployment "$RELEASE" \
        -o 'jsonpath={.spec.template.spec.volumes[?(@.name=="config")].configMap.name}')
    [[ -n $configmap ]] || fail "deployment/$RELEASE mounts no ConfigMap as the volume 'config'"
    kc -n "$NAMESPACE" get configmap "$configmap" -o 'jsonpath={.data.config\.yaml}' \
        >"$WORK/config.installed.yaml" || fail "cannot read the ConfigMap $configmap"
    note "the config is the ConfigMap $configmap"
    # The container ports become free local ports (the Service maps to the webhook one).
    sed -e "s/^\( *\)address: 0\.0\.0\.0:[0-9]*/\1address: 127.0.0.1:$WEBHOOK_PORT/" \
        -e "s/^metricsAddress: 0\.0\.0\.0:[0-9]*/metricsAddress: 127.0.0.1:$METRICS_PORT/" \
        "$WORK/config.installed.yaml" >"$WORK/config.yaml"
    grep -q "address: 127.0.0.1:$WEBHOOK_PORT" "$WORK/config.yaml" ||
        fail "the installed config has no webhook address to move: $(<"$WORK/config.installed.yaml")"
    grep -q "metricsAddress: 127.0.0.1:$METRICS_PORT" "$WORK/config.yaml" ||
        fail "the installed config has no metricsAddress to move: $(<"$WORK/config.installed.yaml")"
    local server
    server=$(kc config view --minify -o 'jsonpath={.clusters[0].cluster.server}')
    cat >"$WORK/operator.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: fake-apiserver
  cluster:
    server: $server
users:
- name: $RELEASE
  user:
    as: system:serviceaccount:$NAMESPACE:$RELEASE
contexts:
- name: $RELEASE
  context:
    cluster: fake-apiserver
    user: $RELEASE
current-context: $RELEASE
EOF
    KUBECONFIG="$WORK/operator.kubeconfig" POD_NAMESPACE="$NAMESPACE" POD_NAME="$RELEASE-local" \
        RUST_LOG=${RUST_LOG:-info} "$PIM_OPERATOR_BIN" run --config "$WORK/config.yaml" \
        >"$OPERATOR_LOG" 2>&1 &
    PIDS+=($!)
    wait_until "the operator is ready (/readyz)" http_ok "$METRICS_PORT" /readyz
}

rollout() {
    step "wait for the operator"
    if [[ $MODE == kind ]]; then
        run kc -n "$NAMESPACE" rollout status "deployment/$RELEASE" --timeout="${TIMEOUT}s"
    else
        run_operator_locally
    fi
    wait_until "the operator wrote its CA into the webhook configurations" webhook_ca_injected
    wait_until "the attestation Secret exists" kc -n "$NAMESPACE" get secret "$RELEASE-attestation"
}

examples() {
    step "kubectl apply -f examples/ (the FinReport example, as a folder)"
    run kc apply "${VALIDATE[@]}" -f "$ROOT/examples/"
    local object
    for object in accesspolicy/finreport-senioranalyst pimgroup/finreport-senioranalyst \
        eligibleassignment/finreport-senioranalyst-alice; do
        wait_until "examples/ created $object" kc get "$object"
    done

    step "examples/requests/: alice asks (with MFA), bob approves (server-side apply)"
    local name=alice-finreport-q2-close
    run kc create "${VALIDATE[@]}" -f "$ROOT/examples/requests/04-activationrequest.yaml" \
        --as alice@contoso.com --as-group finance --as-user-extra amr=mfa
    local requester
    requester=$(kc get activationrequest "$name" -o 'jsonpath={.spec.requester.username}')
    [[ $requester == alice@contoso.com ]] ||
        fail "the webhook stamped requester '$requester', expected alice@contoso.com"
    ok "the webhook stamped the requester alice@contoso.com"
    # The mutating webhook adds the finalizer at create. Fields a mutating webhook sets are
    # owned by no field manager (the API server computes managedFields before mutating
    # admission: k8s.io/apiserver pkg/endpoints/handlers/create.go), while a later patch by
    # the operator would make its manager own f:finalizers.
    local finalizers managed
    finalizers=$(kc get activationrequest "$name" -o 'jsonpath={.metadata.finalizers}')
    managed=$(kc get activationrequest "$name" --show-managed-fields \
        -o 'jsonpath={.metadata.managedFields}')
    [[ $finalizers == *pim.dev/revoke-access* && $managed != *f:finalizers* ]] ||
        fail "the request's finalizers are '$finalizers' (managed: $managed); expected pim.dev/revoke-access, put on by the mutating webhook at create and patched by nobody"
    ok "the webhook put the revoke-access finalizer on at create"
    run kc apply "${VALIDATE[@]}" --server-side --field-manager=bob@contoso.com \
        -f "$ROOT/examples/requests/05-approval.yaml" --as bob@contoso.com \
        --as-user-extra amr=mfa
    local approvers
    approvers=$(kc get activationrequest "$name" -o 'jsonpath={.spec.approvals[*].approver}')
    [[ $approvers == bob@contoso.com ]] ||
        fail "after bob's apply the approvals name '$approvers', expected bob@contoso.com"
    ok "bob's approval is recorded"
    run kc delete activationrequest "$name" --wait=false
    run kc delete -f "$ROOT/examples/" --wait=false
}

setup_access() {
    step "a policy, a PimGroup on the kubernetes directory, and alice's EligibleAssignment"
    local start
    start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    cat >"$WORK/access.yaml" <<EOF
apiVersion: pim.dev/v1alpha1
kind: AccessPolicy
metadata:
  name: $GROUP
spec:
  description: Read-only access to the cluster, on approval.
  activation:
    maxDuration: 1h
    requireJustification: true
    requireMfa: false
    approval:
      approvers:
        - user: $APPROVER
        - group: e2e-approvers  # alice is one too, but never for her own requests
      minApprovals: 1
      timeout: 1h
      allowSelfApproval: false
  assignment:
    maxEligibleDuration: 30d
---
apiVersion: pim.dev/v1alpha1
kind: PimGroup
metadata:
  name: $GROUP
spec:
  directory: kubernetes
  group:
    id: $GROUP
  roles:
    member:
      policy: $GROUP
  rbac:
    clusterRoles: [view]
---
apiVersion: pim.dev/v1alpha1
kind: EligibleAssignment
metadata:
  name: $GROUP-alice
spec:
  group: $GROUP
  role: member
  principal:
    user: $REQUESTER
  type: Eligible
  schedule:
    start: "$start"
    duration: 7d
  justification: kind e2e
EOF
    run kc apply "${VALIDATE[@]}" --server-side -f "$WORK/access.yaml"
    wait_until "the PimGroup is Ready" pimgroup_ready "$GROUP"
    wait_until "alice's EligibleAssignment is Effective" assignment_effective "$GROUP-alice"
    binding_does_not_name "$REQUESTER" >/dev/null || fail "$REQUESTER is bound before activating"
    ok "no binding names $REQUESTER yet"
    if [[ $MODE == kind ]]; then
        local can
        can=$(kc auth can-i list pods --as "$REQUESTER" 2>&1) || true
        [[ $can == no* ]] || fail "before activating, $REQUESTER may already list pods: $can"
        ok "$REQUESTER may not list pods yet"
    fi
}

activate_and_approve() {
    step "kubectl pim activate --wait as $REQUESTER"
    local out="$WORK/activate.out" request="" activate_pid deadline
    : >"$out"
    kubectl-pim activate "$GROUP" --role member --duration 10m \
        --justification "kind e2e: read the cluster" --wait --timeout "${TIMEOUT}s" \
        --as "$REQUESTER" --as-group e2e-users >"$out" 2>&1 &
    activate_pid=$!
    PIDS+=("$activate_pid")
    deadline=$((SECONDS + TIMEOUT))
    until [[ $(<"$out") =~ activationrequest/([a-z0-9.-]+)\ created ]]; do
        if ! kill -0 "$activate_pid" 2>/dev/null || ((SECONDS >= deadline)); then
            fail "kubectl pim activate did not create a request: $(<"$out")"
        fi
        sleep 0.2
    done
    request=${BASH_REMATCH[1]}
    ok "activationrequest/$request created"
    wait_until "the request waits for approval" request_phase_is "$request" PendingApproval
    local requester
    requester=$(kc get activationrequest "$request" -o 'jsonpath={.spec.requester.username}')
    [[ $requester == "$REQUESTER" ]] ||
        fail "the webhook stamped requester '$requester', expected '$REQUESTER'"
    ok "the webhook stamped the requester $requester"

    step "$REQUESTER, an approver too, cannot approve her own request"
    local refused
    if refused=$(kubectl-pim approve "$request" --reason "self" --as "$REQUESTER" \
        --as-group e2e-approvers 2>&1); then
        fail "self-approval was accepted: $refused"
    fi
    [[ $refused == *"own request"* ]] || fail "self-approval failed, but not for that reason: $refused"
    ok "kubectl pim refused: $refused"
    # kubectl pim checks first; the webhook must refuse the same write made without it.
    cat >"$WORK/self-approval.yaml" <<EOF
apiVersion: pim.dev/v1alpha1
kind: ActivationRequest
metadata:
  name: $request
spec:
  group: $GROUP
  approvals:
    - approver: $REQUESTER
      decision: Approve
      reason: self
EOF
    if refused=$(kc apply "${VALIDATE[@]}" --server-side --field-manager="$REQUESTER" \
        -f "$WORK/self-approval.yaml" --as "$REQUESTER" --as-group e2e-approvers 2>&1); then
        fail "the webhook accepted a self-approval: $refused"
    fi
    [[ $refused == *"denied the request"*"own request"* ]] ||
        fail "the self-approval failed, but not by the webhook's refusal: $refused"
    ok "the webhook refused: $refused"

    step "approve as $APPROVER"
    run kubectl-pim approve "$request" --reason "kind e2e: approved" --as "$APPROVER"
    local status=0
    wait "$activate_pid" || status=$?
    if ((status != 0)); then
        fail "kubectl pim activate --wait exited $status: $(<"$out")"
    fi
    note "kubectl pim activate --wait printed:"
    sed 's/^/      /' "$out"
    ok "kubectl pim activate --wait: Active"
    REQUEST=$request
}

granted() {
    step "the PimGroup's ClusterRoleBinding names $REQUESTER"
    wait_until "a ClusterRoleBinding of the PimGroup names $REQUESTER" binding_names "$REQUESTER"
    if [[ $MODE == kind ]]; then
        wait_until "$REQUESTER may list pods" kc auth can-i list pods --as "$REQUESTER"
    fi
}

deactivate() {
    step "deactivate early"
    run kubectl-pim deactivate "$REQUEST" --as "$REQUESTER"
    wait_until "no PimGroup binding names $REQUESTER" binding_does_not_name "$REQUESTER"
    wait_until "the request ended" request_phase_is "$REQUEST" Deactivated Expired
    run kc get activationrequest "$REQUEST"
    if [[ $MODE == kind ]]; then
        local can
        can=$(kc auth can-i list pods --as "$REQUESTER" 2>&1) || true
        [[ $can == no* ]] || fail "after deactivation, $REQUESTER may still list pods: $can"
        ok "$REQUESTER may no longer list pods"
    fi
}

tools
build
cluster
install
rollout
examples
setup_access
activate_and_approve
granted
deactivate
step "done"
ok "the kind flow works ($MODE mode, installed with $INSTALL)"
