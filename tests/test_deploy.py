"""Cross-checks of the deployment files under deploy/.

The linters (deploy/check.sh) check each file on its own; these tests check that the
files agree with each other: selectors with labels, ports with the bind address,
grace periods with the graceful timeout. They read files only.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
K8S = DEPLOY / "k8s"
PROBE_PATHS = ("/-/healthz", "/-/readyz")


# --- readers -------------------------------------------------------------------------


def _k8s_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                yield path.name, doc


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    """The manifests by kind; each kind appears once."""
    by_kind: dict[str, dict[str, Any]] = {}
    for name, doc in _k8s_documents():
        assert doc["kind"] not in by_kind, f"{name}: second {doc['kind']}"
        by_kind[doc["kind"]] = doc
    return by_kind


@pytest.fixture(scope="module")
def pod(k8s: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return k8s["Deployment"]["spec"]["template"]


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    containers = pod["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


@pytest.fixture(scope="module")
def settings(k8s: dict[str, dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = k8s["ConfigMap"]["data"]
    return data


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    pairs = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in _dockerfile():
        if word == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(rest))
    return env


def _unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """systemd unit sections -> key -> values (a key may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _env_file(path: Path) -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}


def _bind_port(bind: str) -> int:
    host, _, port = bind.rpartition(":")
    assert host, bind
    assert port.isdigit(), bind
    return int(port)


def _prestop_sleep(container: dict[str, Any]) -> int:
    handler = container["lifecycle"]["preStop"]
    if "sleep" in handler:
        return int(handler["sleep"]["seconds"])
    command = handler["exec"]["command"]
    assert command[0] == "sleep", command
    return int(command[1])


# --- Kubernetes ----------------------------------------------------------------------


def test_deployment_selector_matches_pod_labels(k8s: dict[str, Any], pod: dict[str, Any]) -> None:
    selector = k8s["Deployment"]["spec"]["selector"]["matchLabels"]
    assert selector
    assert selector.items() <= pod["metadata"]["labels"].items()


def test_service_selects_the_pods(k8s: dict[str, Any], pod: dict[str, Any]) -> None:
    selector = k8s["Service"]["spec"]["selector"]
    assert selector
    assert selector.items() <= pod["metadata"]["labels"].items()


def test_service_target_port_is_a_named_container_port(
    k8s: dict[str, Any], container: dict[str, Any]
) -> None:
    names = {port["name"] for port in container["ports"]}
    for port in k8s["Service"]["spec"]["ports"]:
        assert isinstance(port["targetPort"], str), "target the port by name"
        assert port["targetPort"] in names


def test_hpa_scales_the_deployment(k8s: dict[str, Any]) -> None:
    hpa, deployment = k8s["HorizontalPodAutoscaler"], k8s["Deployment"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"],
        deployment["kind"],
        deployment["metadata"]["name"],
    )
    assert hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"]
    assert hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"


def test_pdb_selects_the_pods_and_leaves_room_to_drain(
    k8s: dict[str, Any], pod: dict[str, Any]
) -> None:
    pdb = k8s["PodDisruptionBudget"]
    assert pdb["apiVersion"] == "policy/v1"
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector
    assert selector.items() <= pod["metadata"]["labels"].items()
    min_available = pdb["spec"]["minAvailable"]
    assert isinstance(min_available, int)
    # Below the smallest replica count the HPA may choose, or a drain blocks forever.
    assert min_available < k8s["Deployment"]["spec"]["replicas"]
    assert min_available < k8s["HorizontalPodAutoscaler"]["spec"]["minReplicas"]


def test_grace_period_outlasts_prestop_and_graceful_timeout(
    pod: dict[str, Any], container: dict[str, Any], settings: dict[str, str]
) -> None:
    graceful = float(settings["WSGIPOOL_GRACEFUL_TIMEOUT"])
    sleep = _prestop_sleep(container)
    assert sleep > 0
    assert pod["spec"]["terminationGracePeriodSeconds"] > graceful + sleep


def test_probes_use_the_front_endpoints(container: dict[str, Any]) -> None:
    names = {port["name"] for port in container["ports"]}
    liveness, readiness = container["livenessProbe"], container["readinessProbe"]
    assert liveness["httpGet"]["path"] == "/-/healthz"
    assert readiness["httpGet"]["path"] == "/-/readyz"
    for key in ("livenessProbe", "readinessProbe", "startupProbe"):
        if key in container:
            assert container[key]["httpGet"]["path"] in PROBE_PATHS
            assert container[key]["httpGet"]["port"] in names


def test_container_port_matches_configmap_bind(
    k8s: dict[str, Any], container: dict[str, Any], settings: dict[str, str]
) -> None:
    refs = [source["configMapRef"]["name"] for source in container["envFrom"]]
    assert k8s["ConfigMap"]["metadata"]["name"] in refs
    explicit = {item["name"] for item in container.get("env", [])}
    assert "WSGIPOOL_BIND" not in explicit, "env would shadow the ConfigMap's bind"
    [port] = container["ports"]
    assert port["containerPort"] == _bind_port(settings["WSGIPOOL_BIND"])


def test_workers_follow_the_cpu_limit(container: dict[str, Any], settings: dict[str, str]) -> None:
    assert "WSGIPOOL_WORKERS" not in settings
    [workers] = [item for item in container["env"] if item["name"] == "WSGIPOOL_WORKERS"]
    ref = workers["valueFrom"]["resourceFieldRef"]
    assert ref["resource"] == "limits.cpu"
    assert str(ref["divisor"]) == "1"
    assert ref.get("containerName", container["name"]) == container["name"]
    assert "cpu" in container["resources"]["limits"]


def test_pod_runs_locked_down(pod: dict[str, Any], container: dict[str, Any]) -> None:
    security = container["securityContext"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["spec"]["automountServiceAccountToken"] is False


def test_image_is_pinned(container: dict[str, Any]) -> None:
    image = container["image"]
    name, _, tag = image.rpartition(":")
    assert name, f"no tag in {image}"
    assert "/" not in tag, f"no tag in {image}"
    assert tag != "latest"
    assert container["imagePullPolicy"] in ("Always", "IfNotPresent")


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)


# --- Dockerfile ----------------------------------------------------------------------


def test_dockerfile_exposes_the_bind_port(container: dict[str, Any]) -> None:
    exposed = [rest for word, rest in _dockerfile() if word == "EXPOSE"]
    env = _dockerfile_env()
    assert exposed == [str(_bind_port(env["WSGIPOOL_BIND"]))]
    assert int(exposed[0]) == container["ports"][0]["containerPort"]
    assert env["HEALTHCHECK_URL"].endswith(f":{exposed[0]}/-/healthz")


def test_dockerfile_user_matches_pod_security_context(pod: dict[str, Any]) -> None:
    args = dict(rest.split("=", 1) for word, rest in _dockerfile() if word == "ARG" and "=" in rest)
    users = [rest for word, rest in _dockerfile() if word == "USER"]
    assert users == ["${UID}:${UID}"]
    assert int(args["UID"]) == pod["spec"]["securityContext"]["runAsUser"]


def test_dockerfile_entrypoint_is_exec_form() -> None:
    [entrypoint] = [rest for word, rest in _dockerfile() if word == "ENTRYPOINT"]
    assert entrypoint.startswith("["), "shell form would put /bin/sh between PID 1 and wsgipool"
    healthcheck = " ".join(rest for word, rest in _dockerfile() if word == "HEALTHCHECK")
    assert "urllib.request" in healthcheck


# --- systemd and compose -------------------------------------------------------------


def test_systemd_unit_reloads_with_hup_and_outlasts_graceful_timeout() -> None:
    service = _unit(DEPLOY / "systemd" / "wsgipool.service")["Service"]
    env = _env_file(DEPLOY / "systemd" / "wsgipool.env")
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["ExecStart"][0].split()[1:3] == ["serve", "${APP_MODULE}"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert service["KillMode"] == ["mixed"]
    assert float(service["TimeoutStopSec"][0]) > float(env["WSGIPOOL_GRACEFUL_TIMEOUT"])
    assert service["NoNewPrivileges"] == ["yes"]
    assert service["ProtectSystem"] == ["strict"]


def test_compose_nginx_reaches_the_app_port() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    app = compose["services"]["app"]
    port = _bind_port(app["environment"]["WSGIPOOL_BIND"])
    assert app["expose"] == [str(port)]
    assert app["deploy"]["replicas"] == 2
    grace = int(app["stop_grace_period"].rstrip("s"))
    assert grace > float(app["environment"]["WSGIPOOL_GRACEFUL_TIMEOUT"])
    nginx_conf = (DEPLOY / "nginx" / "nginx.conf").read_text()
    assert re.search(rf"^\s*server app:{port}\b", nginx_conf, re.MULTILINE)


# --- autoscaling on utilization ---------------------------------------------------------


def test_utilization_hpa_reads_the_metric_its_adapter_rule_makes(
    k8s: dict[str, Any],
) -> None:
    folder = K8S / "autoscaling"
    hpa = yaml.safe_load((folder / "hpa.yaml").read_text())
    adapter = yaml.safe_load((folder / "prometheus-adapter.yaml").read_text())
    # It replaces the CPU HPA: the same object, the same target.
    assert hpa["metadata"]["name"] == k8s["HorizontalPodAutoscaler"]["metadata"]["name"]
    assert hpa["spec"]["scaleTargetRef"] == k8s["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    [metric] = hpa["spec"]["metrics"]
    [rule] = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == rule["name"]["as"]
    # The rule's series are ones wsgipool exports (named in its metrics code).
    exported = (DEPLOY.parent / "src" / "wsgipool" / "_observe" / "metrics.py").read_text()
    for series in re.findall(r"wsgipool_\w+", rule["seriesQuery"] + rule["metricsQuery"]):
        assert f'"{series.removesuffix("_total")}"' in exported, series
