#!/usr/bin/env bash
# Image smoke test: build deploy/Dockerfile with podman, start two containers on
# loopback, send traffic to both, SIGTERM one of them mid-load, and require that
# the other answered every request and that the stopped one drained its
# in-flight requests and exited 0.
#
#     bash deploy/smoke.sh            # from the repository root, as root
#
# Works without a container registry or a package index inside the build:
#   - the base image named in the Dockerfile is used if podman already has it;
#     otherwise a stand-in is made under that name with debootstrap (Debian
#     bookworm with its python3, pip and venv) and `podman import`, and removed
#     afterwards. The stand-in's Python is bookworm's 3.11, not 3.12;
#   - pip on the host downloads every wheel the build needs (for the base
#     image's Python) into a wheelhouse, passed to the build as the named
#     context "wheelhouse" with PIP_NO_INDEX=1, so pip in the build never asks
#     an index (chroot isolation shares the host's network; nothing uses it).
# Installs podman, runc and debootstrap with apt-get if they are missing.
# Removes every container and image it made, and exits non-zero, naming the
# failed step, on any failure. Each step has a time limit.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

tag="localhost/wsgipool-smoke:$$"
name_a="wsgipool-smoke-a-$$"
name_b="wsgipool-smoke-b-$$"
# The base image, read from the Dockerfile so that there is one spelling of it.
base=$(sed -nE 's/^FROM ([^ ]+) AS build$/\1/p' deploy/Dockerfile)
# runc cannot raise these limits past the host's, and podman's defaults for
# root are higher than the hard limits of a typical sandbox or CI runner.
run_opts=(--runtime runc --ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

work=$(mktemp -d)
made_base=""
images_before=""
step="setup"

say() { printf '== %s\n' "$*"; }
fail() {
    printf '!! smoke FAILED at step "%s": %s\n' "$step" "$*" >&2
    exit 1
}

cleanup() {
    local status=$? new
    timeout 60 podman rm --force --time 0 "$name_a" "$name_b" > /dev/null 2>&1 || true
    timeout 60 podman rmi --force "$tag" > /dev/null 2>&1 || true
    if [[ -n "$images_before" ]]; then
        # Intermediate images the build left behind: those that did not exist before.
        new=$(comm -13 <(printf '%s\n' "$images_before") <(podman images --all --quiet --no-trunc | sort -u))
        if [[ -n "$new" ]]; then
            # shellcheck disable=SC2086
            timeout 60 podman rmi --force $new > /dev/null 2>&1 || true
        fi
    fi
    if [[ -n "$made_base" ]]; then
        timeout 60 podman rmi --force "$base" > /dev/null 2>&1 || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'fail "interrupted"' INT TERM

ensure_tools() {
    step="install tools"
    local missing=()
    command -v podman > /dev/null || missing+=(podman)
    command -v runc > /dev/null || missing+=(runc)
    command -v debootstrap > /dev/null || missing+=(debootstrap)
    if ((${#missing[@]})); then
        say "installing ${missing[*]}"
        timeout 300 apt-get update -qq || fail "apt-get update"
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq \
            --no-install-recommends "${missing[@]}" uidmap > "$work/apt.log" 2>&1 \
            || { cat "$work/apt.log"; fail "apt-get install ${missing[*]}"; }
    fi
}

# A Debian bookworm root filesystem with python3, pip and venv, under the base
# image's name, with `python` and `pip` on PATH as in the official image.
make_base() {
    step="make base image"
    if timeout 60 podman image exists "$base"; then
        say "base $base: present, used as it is"
        return
    fi
    say "base $base: absent, making a stand-in with debootstrap (about 90 s)"
    timeout 900 debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,python-is-python3 \
        bookworm "$work/rootfs" http://deb.debian.org/debian > "$work/debootstrap.log" 2>&1 \
        || { tail -20 "$work/debootstrap.log"; fail "debootstrap"; }
    rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
    made_base=1
    tar -C "$work/rootfs" -c . | timeout 300 podman import \
        --change 'ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV=LANG=C.UTF-8' \
        --change 'CMD=["python3"]' \
        - "$base" > /dev/null 2>&1 || fail "podman import"
    rm -rf "$work/rootfs"
}

# Every wheel the build stage needs, for the base image's Python: the project's
# dependencies with the serve extra, dumb-init, and hatchling for building the
# project itself. The project's own wheel is left out: the build makes it.
make_wheelhouse() {
    step="wheelhouse"
    local py arch pin
    py=$(timeout 120 podman run --rm "${run_opts[@]}" --network none --entrypoint python3 "$base" \
        -c 'import sys; print("%d%d" % sys.version_info[:2])') || fail "reading the base image's Python version"
    arch=$(uname -m)
    pin=$(grep -oE '"dumb-init==[^"]+"' deploy/Dockerfile | tr -d '"')
    say "wheelhouse for cp$py ($arch)"
    mkdir -p "$work/project" "$work/wheelhouse"
    {
        timeout 300 python3 -m pip wheel --no-deps --disable-pip-version-check \
            --wheel-dir "$work/project" . \
        && timeout 600 python3 -m pip download --disable-pip-version-check \
            --only-binary=:all: --python-version "$py" --implementation cp --abi "cp$py" \
            --platform "manylinux_2_28_$arch" --platform "manylinux2014_$arch" \
            --dest "$work/wheelhouse" \
            "$(echo "$work"/project/wsgipool-*.whl)[serve]" "$pin" hatchling
    } > "$work/pip.log" 2>&1 || { tail -20 "$work/pip.log"; fail "pip download"; }
    rm -f "$work"/wheelhouse/wsgipool-*.whl
}

build_image() {
    step="build"
    say "building $tag (no pull, no package index)"
    images_before=$(podman images --all --quiet --no-trunc | sort -u)
    # --format docker keeps HEALTHCHECK, which the OCI format drops.
    timeout 900 podman build --isolation chroot --pull=never --format docker \
        --build-context "wheelhouse=$work/wheelhouse" --build-arg PIP_NO_INDEX=1 \
        --file deploy/Dockerfile --tag "$tag" . > "$work/build.log" 2>&1 \
        || { tail -30 "$work/build.log"; fail "podman build"; }
}

start() {
    local name=$1 port=$2 admin=$3
    # As the compose file runs it: read-only root, no capabilities. Host network,
    # bound to loopback only; the detailed probes on an admin listener of their own.
    timeout 120 podman run --detach --name "$name" "${run_opts[@]}" --network host \
        --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \
        --env "WSGIPOOL_BIND=127.0.0.1:$port" --env WSGIPOOL_WORKERS=2 \
        --env WSGIPOOL_STATUS=true --env "WSGIPOOL_ADMIN_BIND=127.0.0.1:$admin" \
        --env "HEALTHCHECK_URL=http://127.0.0.1:$port/-/healthz" \
        --env WSGIPOOL_GRACEFUL_TIMEOUT=20 \
        "$tag" > /dev/null 2> "$work/run-$name.log" || { cat "$work/run-$name.log"; fail "podman run $name"; }
}

wait_ready() {
    local name=$1 port=$2
    python3 - "$port" <<'PY' || { timeout 30 podman logs "$name" 2>&1 | tail -20; fail "$name never became ready"; }
import sys, time, urllib.request

deadline = time.monotonic() + 60
url = f"http://127.0.0.1:{sys.argv[1]}/-/readyz"
while True:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(0.2)
PY
}

run_containers() {
    step="run"
    read -r port_a port_b admin_a admin_b < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
    say "starting $name_a on 127.0.0.1:$port_a and $name_b on 127.0.0.1:$port_b"
    start "$name_a" "$port_a" "$admin_a"
    start "$name_b" "$port_b" "$admin_b"
    wait_ready "$name_a" "$port_a"
    wait_ready "$name_b" "$port_b"
    step="image checks"
    timeout 60 podman healthcheck run "$name_a" > "$work/health.log" 2>&1 \
        || { cat "$work/health.log"; fail "HEALTHCHECK of $name_a did not pass"; }
    local pid1 user
    pid1=$(timeout 30 podman exec "$name_a" cat /proc/1/cmdline | tr '\0' ' ')
    [[ "$pid1" == "dumb-init -- wsgipool "* ]] || fail "PID 1 is '$pid1', not dumb-init"
    user=$(timeout 30 podman exec "$name_a" python -c 'import os; print(os.getuid())')
    [[ "$user" == 10001 ]] || fail "the server runs as uid $user, not 10001"
    say "healthcheck passes, PID 1 is dumb-init, uid 10001"
}

# Load on both; then, with two slow requests running in A's two workers, SIGTERM
# A. B keeps taking load throughout A's drain. Every request uses a new
# connection.
load_and_terminate() {
    step="load and SIGTERM"
    say "load on both, SIGTERM to $name_a mid-load"
    python3 - "$port_a" "$port_b" "$name_a" "$admin_a" <<'PY' || fail "see above"
import http.client, json, subprocess, sys, threading, time

port_a, port_b, name_a = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
admin_a = int(sys.argv[4])
WARMUP, AFTER = 3.0, 6.0  # seconds of load before SIGTERM, and on B after it
PATHS = ("/", "/", "/slow?s=0.2")
lock = threading.Lock()
results = {"a": [], "b": []}  # (started, finished, ok, detail)


def request(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read()
        if path.startswith("/-/"):
            return response.status == 200, body
        return response.status == 200 and body.startswith(b"Hello"), str(response.status)
    except OSError as exc:
        return False, repr(exc)
    finally:
        conn.close()


def record(key, port, path):
    started = time.monotonic()
    ok, detail = request(port, path)
    with lock:
        results[key].append((started, time.monotonic(), ok, detail))


def client(key, port, path, stop):
    while not stop.is_set():
        record(key, port, path)


def load(key, port):
    stop = threading.Event()
    threads = [threading.Thread(target=client, args=(key, port, path, stop)) for path in PATHS]
    for thread in threads:
        thread.start()
    return stop, threads


stop_a, threads_a = load("a", port_a)
stop_b, threads_b = load("b", port_b)
time.sleep(WARMUP)
# A load balancer stops sending new requests to a terminating replica, and so
# does this test; two slow requests are still running in A when SIGTERM comes.
stop_a.set()
for thread in threads_a:
    thread.join(timeout=30)
tail = [threading.Thread(target=record, args=("a", port_a, "/slow?s=2")) for _ in range(2)]
for thread in tail:
    thread.start()
deadline = time.monotonic() + 10
while True:
    ok, body = request(admin_a, "/-/readyz")  # the summary is on the admin listener
    if ok and json.loads(body)["busy"] == 2:
        break
    if time.monotonic() > deadline:
        print("   A never had both workers busy")
        sys.exit(1)
    time.sleep(0.05)
term_at = time.monotonic()
subprocess.run(["podman", "kill", "--signal", "TERM", name_a], check=True,
               capture_output=True, timeout=30)
time.sleep(AFTER)
stop_b.set()
for thread in tail + threads_b:
    thread.join(timeout=60)

failed = False
for key in ("a", "b"):
    rows = results[key]
    bad = [row for row in rows if not row[2]]
    print(f"   {key.upper()}: {len(rows)} requests, {len(bad)} failed")
    for started, _, _, detail in bad[:10]:
        print(f"      started {started - term_at:+.2f}s from SIGTERM: {detail}")
    failed |= bool(bad)
in_flight = sum(1 for started, done, _, _ in results["a"] if started < term_at < done)
after = sum(1 for started, _, _, _ in results["b"] if started > term_at)
print(f"   A had {in_flight} requests in flight at SIGTERM; B took {after} after it")
if in_flight != 2 or after == 0:
    print("   the SIGTERM did not land mid-load")
    failed = True
sys.exit(1 if failed else 0)
PY
    step="graceful exit"
    local code
    code=$(timeout 60 podman wait "$name_a") || fail "$name_a did not exit within 60 s"
    [[ "$code" == 0 ]] || { timeout 30 podman logs "$name_a" 2>&1 | tail -20; fail "$name_a exited $code"; }
    say "$name_a exited 0"
    timeout 30 podman logs "$name_a" > "$work/a.log" 2>&1 || fail "podman logs $name_a"
    grep -q "Application shutdown complete" "$work/a.log" \
        || { tail -20 "$work/a.log"; fail "$name_a's log shows no clean shutdown"; }
}

main() {
    local started=$SECONDS
    [[ -n "$base" ]] || fail "no 'FROM … AS build' line in deploy/Dockerfile"
    ensure_tools
    make_base
    make_wheelhouse
    build_image
    run_containers
    load_and_terminate
    say "smoke passed in $((SECONDS - started)) s"
}

main "$@"
