"""Deployment manifests: deploy/k8s (base + production overlay) and deploy/compose.

Offline only. The Kubernetes manifests are checked three ways:
- kubernetes-validate --strict against the API schemas of several Kubernetes versions;
- checkov's Kubernetes policies, where every skipped check must carry a written reason and be
  one this file expects (a new skip is a reviewed change here, not a silent annotation);
- the properties the service depends on, read from the YAML (probes on the right paths and
  port, HPA aimed at the Deployment, hardening, the overlay's image tag, ...).
The overlay is rendered with `kubectl kustomize` where kubectl exists, else by a small renderer
here that supports exactly the kustomize features the overlay uses.

The validators live in their own venv (deploy/k8s/install-tools.sh; pins in
deploy/k8s/requirements-tools.txt) because checkov's dependencies conflict with the test venv's.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "production"
COMPOSE = REPO / "deploy" / "compose"
LOCAL_CLUSTER = REPO / "deploy" / "local-cluster"

# Oldest and newest Kubernetes versions the manifests are validated against (1.30: the oldest
# release still commonly supported by managed clusters when this was written).
K8S_VERSIONS = ["1.30.0", "1.37.0"]
CONTAINER_PORT = 1313
# check id -> why it is skipped. The reason itself is in the manifest's checkov.io/skip
# annotation; this list makes adding a skip a change that shows up in review.
EXPECTED_SKIPS = {
    "CKV_K8S_43",   # image by digest: the base is tag-only, the overlay sets the release image
}
# Checks this service relies on: they must run and pass, not be skipped or dropped by checkov.
REQUIRED_PASSES = {
    "CKV_K8S_8", "CKV_K8S_9",               # liveness / readiness probes
    "CKV_K8S_10", "CKV_K8S_11", "CKV_K8S_12", "CKV_K8S_13",   # cpu / memory requests + limits
    "CKV_K8S_14", "CKV_K8S_15",             # tagged image, pull policy Always
    "CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_23", "CKV_K8S_28", "CKV_K8S_37",   # privileges, fs, caps
    "CKV_K8S_31", "CKV_K8S_38", "CKV_K8S_40",   # seccomp, SA token, high uid
    "CKV2_K8S_6",                            # a NetworkPolicy selects the pods
}

# Tools: a dedicated venv (DEPLOY_TOOLS_VENV or .venv/deploy-tools), else the test venv, else PATH.
_TOOL_DIRS = [Path(os.environ["DEPLOY_TOOLS_VENV"]) / "bin"] if os.environ.get("DEPLOY_TOOLS_VENV") else []
_TOOL_DIRS += [REPO / ".venv" / "deploy-tools" / "bin", REPO / ".venv" / "bin"]
INSTALL_HINT = "install the validators: deploy/k8s/install-tools.sh (pins in deploy/k8s/requirements-tools.txt)"


def tool(name: str) -> str:
    for folder in _TOOL_DIRS:
        if (folder / name).is_file() and os.access(folder / name, os.X_OK):
            return str(folder / name)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: {INSTALL_HINT}")
    return found


def offline_env() -> dict:
    """The environment for the validators: no outside network. checkov is told not to download
    anything or look for updates, and any HTTP(S) it tried anyway would go to a closed loopback
    port instead of the internet."""
    env = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    env.update(BC_SKIP_MAPPING="TRUE", CKV_SKIP_PACKAGE_UPDATE_CHECK="TRUE",
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="")
    return env


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def base_files() -> list[Path]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return [BASE / name for name in kustomization["resources"]]


def split_image(image: str) -> tuple[str, str | None]:
    """('name', 'tag') of an image reference without a digest."""
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, None
    return name, tag


# ------------------------------------------------------------------------------ rendering
def _pod_containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", []) + spec.get("initContainers", [])


def _json_pointer_set(doc: dict, pointer: str, value, op: str) -> None:
    keys = [part.replace("~1", "/").replace("~0", "~") for part in pointer.lstrip("/").split("/")]
    target = doc
    for key in keys[:-1]:
        target = target[int(key)] if isinstance(target, list) else target[key]
    last = keys[-1]
    if isinstance(target, list):
        index = len(target) if last == "-" else int(last)
        if op == "add":
            target.insert(index, value)
        else:
            target[index] = value
    else:
        if op == "replace" and last not in target:
            raise KeyError(f"replace of missing {pointer}")
        target[last] = value


def python_render(folder: Path) -> list[dict]:
    """A kustomization rendered with the features this repository uses: resources (files and
    folders), namespace, images (newName/newTag/digest), replicas, and JSON 6902 patches (add /
    replace) with a target. Anything else is refused, so the renderer never silently differs."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "resources", "namespace", "images", "replicas", "patches"}
    unsupported = set(kustomization) - known
    if unsupported:
        raise NotImplementedError(f"{folder}: kustomize feature(s) {sorted(unsupported)} not supported here")
    docs: list[dict] = []
    for entry in kustomization.get("resources", []):
        path = (folder / entry).resolve()
        docs += python_render(path) if path.is_dir() else copy.deepcopy(load_all(path))
    namespace = kustomization.get("namespace")
    for doc in docs:
        if namespace and doc["kind"] != "Namespace":
            doc["metadata"]["namespace"] = namespace
    for image in kustomization.get("images", []):
        for doc in docs:
            for container in _pod_containers(doc):
                name, tag = split_image(container["image"].split("@")[0])
                if name != image["name"]:
                    continue
                reference = image.get("newName", name)
                if "digest" in image:
                    reference += "@" + image["digest"]
                else:
                    reference += ":" + str(image.get("newTag", tag))
                container["image"] = reference
    for replicas in kustomization.get("replicas", []):
        for doc in docs:
            if doc["metadata"]["name"] == replicas["name"] and "replicas" in doc.get("spec", {}):
                doc["spec"]["replicas"] = replicas["count"]
    for patch in kustomization.get("patches", []):
        target = patch["target"]
        operations = yaml.safe_load(patch["patch"])
        matched = [doc for doc in docs if doc["kind"] == target["kind"] and doc["metadata"]["name"] == target["name"]]
        assert matched, f"patch target {target} matches nothing"
        for doc in matched:
            for operation in operations:
                if operation["op"] not in ("add", "replace"):
                    raise NotImplementedError(f"patch op {operation['op']}")
                _json_pointer_set(doc, operation["path"], operation["value"], operation["op"])
    return docs


def kubectl_render(folder: Path) -> list[dict] | None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    result = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=120,
                            env=offline_env())
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def overlay_docs() -> list[dict]:
    """The production overlay as it would be applied."""
    return kubectl_render(OVERLAY) or python_render(OVERLAY)


@pytest.fixture(scope="module")
def overlay_file(overlay_docs, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rendered") / "production.yaml"
    path.write_text(yaml.safe_dump_all(overlay_docs, sort_keys=False))
    return path


def by_kind(docs: list[dict], kind: str) -> dict:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def base_docs() -> list[dict]:
    docs = []
    for path in base_files():
        docs += load_all(path)
    return docs


# ------------------------------------------------------------------------------- validators
def test_base_lists_every_manifest_once(base_docs):
    listed = sorted(path.name for path in base_files())
    on_disk = sorted(path.name for path in BASE.glob("*.yaml") if path.name != "kustomization.yaml")
    assert listed == on_disk, "base/kustomization.yaml and the files in base/ differ"
    kinds = sorted(doc["kind"] for doc in base_docs)
    assert kinds == sorted(["Namespace", "ServiceAccount", "Deployment", "Service", "HorizontalPodAutoscaler",
                            "PodDisruptionBudget", "NetworkPolicy"])


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_pass_strict_schema_validation(version, overlay_file):
    files = [str(path) for path in base_files()] + [str(overlay_file)]
    result = subprocess.run([tool("kubernetes-validate"), "--strict", "--kubernetes-version", version, *files],
                            capture_output=True, text=True, timeout=300, env=offline_env())
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    passed = re.findall(r" passed for resource ", output)
    assert len(passed) == 2 * len(base_files()), output   # each base file + its rendered copy


def test_strict_validation_rejects_an_unknown_field(tmp_path):
    """The validator invocation can fail: a misspelt field is an error, not ignored."""
    deployment = load_all(BASE / "deployment.yaml")[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessprobe"] = container.pop("readinessProbe")
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(deployment))
    result = subprocess.run([tool("kubernetes-validate"), "--strict", "--kubernetes-version", K8S_VERSIONS[-1],
                             str(broken)], capture_output=True, text=True, timeout=300, env=offline_env())
    assert result.returncode != 0
    assert "readinessprobe" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def checkov_report(overlay_file, tmp_path_factory) -> dict:
    """checkov's Kubernetes policies over deploy/k8s and the rendered overlay, as JSON. One scan
    of one folder holding a copy of both (checkov run on several folders reports one twice)."""
    scan = tmp_path_factory.mktemp("checkov")
    shutil.copytree(K8S, scan / "k8s", ignore=shutil.ignore_patterns("*.sh"))
    (scan / "rendered").mkdir()
    shutil.copy(overlay_file, scan / "rendered" / "production.yaml")
    result = subprocess.run(
        [tool("checkov"), "--framework", "kubernetes", "--skip-download", "--output", "json", "--directory", str(scan)],
        capture_output=True, text=True, timeout=600, cwd=scan, env=offline_env())
    assert result.stdout.strip(), result.stderr
    report = json.loads(result.stdout)
    assert isinstance(report, dict) and report["check_type"] == "kubernetes", result.stdout[:500]
    report["returncode"] = result.returncode
    return report


def test_checkov_passes(checkov_report):
    failed = [(c["check_id"], c["check_name"], c["file_path"], c["resource"])
              for c in checkov_report["results"]["failed_checks"]]
    assert not failed, failed
    assert checkov_report["summary"]["parsing_errors"] == 0
    assert checkov_report["returncode"] == 0
    passed = {c["check_id"] for c in checkov_report["results"]["passed_checks"]}
    assert REQUIRED_PASSES <= passed, sorted(REQUIRED_PASSES - passed)
    # Both the base files and the rendered overlay were scanned.
    files = {c["file_path"] for c in checkov_report["results"]["passed_checks"]}
    assert {"/rendered/production.yaml", "/k8s/base/deployment.yaml"} <= files, files


def test_every_checkov_skip_is_expected_and_justified(checkov_report):
    skipped = checkov_report["results"]["skipped_checks"]
    assert {c["check_id"] for c in skipped} == EXPECTED_SKIPS
    for check in skipped:
        reason = check["check_result"].get("suppress_comment") or ""
        assert reason != "No comment provided" and len(reason) >= 20, (check["check_id"], reason)


# ------------------------------------------------------------------------------ properties
def _deployment_parts(docs):
    deployment = by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]
    container = by_name(pod["spec"]["containers"], "api")
    return deployment, pod, container


def by_name(items: list[dict], name: str) -> dict:
    matches = [item for item in items if item["name"] == name]
    assert len(matches) == 1, f"{name}: {len(matches)} matches"
    return matches[0]


def container_port(container: dict, port) -> int:
    """The number a probe's or Service's port refers to (a name or a number)."""
    if isinstance(port, int):
        return port
    return by_name(container["ports"], port)["containerPort"]


def test_deployment_is_hardened(base_docs):
    deployment, pod, container = _deployment_parts(base_docs)
    assert deployment["spec"]["replicas"] >= 2
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == by_kind(base_docs, "ServiceAccount")["metadata"]["name"]
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] == 10001
    assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"] and not security["capabilities"].get("add")
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    # Writable paths are emptyDirs: /tmp, and a memory-backed one for gunicorn's heartbeats; the
    # rest (the token file) is mounted read-only.
    mounts = {mount["mountPath"]: by_name(spec["volumes"], mount["name"]) for mount in container["volumeMounts"]
              if not mount.get("readOnly")}
    assert "/tmp" in mounts and all("emptyDir" in volume for volume in mounts.values())
    assert all(volume["emptyDir"].get("sizeLimit") for volume in mounts.values())
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert mounts[env["WORKER_TMP_DIR"]]["emptyDir"]["medium"] == "Memory"
    # Image: by tag (the overlay replaces it), never latest, always pulled.
    name, tag = split_image(container["image"])
    assert tag and tag != "latest" and "@" not in container["image"]
    assert container["imagePullPolicy"] == "Always"
    assert container_port(container, "http") == CONTAINER_PORT
    assert int(env["WEB_CONCURRENCY"]) >= 1 and env["PORT"] == str(CONTAINER_PORT)


def _quantity(value: str) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "": 1}
    number, unit = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value)).groups()
    return float(number) * units[unit]


def test_resources_cover_the_measured_memory(base_docs):
    _, _, container = _deployment_parts(base_docs)
    resources = container["resources"]
    workers = int({item["name"]: item.get("value") for item in container["env"]}["WEB_CONCURRENCY"])
    for kind in ("cpu", "memory"):
        assert _quantity(resources["requests"][kind]) <= _quantity(resources["limits"][kind])
    # ~200 MB per worker after start; +150 MB per worker while scoring a 10,000-row batch; the
    # master holds the model too (about one worker's worth).
    assert _quantity(resources["requests"]["memory"]) >= workers * 200e6
    assert _quantity(resources["limits"]["memory"]) >= 200e6 + workers * (200e6 + 150e6)
    assert _quantity(resources["requests"]["cpu"]) >= 0.25


def test_probes_hit_ready_and_health_on_the_container_port(base_docs):
    deployment, pod, container = _deployment_parts(base_docs)
    expected = {"readinessProbe": "/ready", "livenessProbe": "/health", "startupProbe": "/health"}
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert container_port(container, get["port"]) == CONTAINER_PORT, probe
    startup = container["startupProbe"]
    # The model loads in about 5-10 s; allow several times that before the pod is restarted.
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 30
    assert pod["spec"]["terminationGracePeriodSeconds"] >= 35   # gunicorn's graceful_timeout is 30 s


def test_pods_spread_over_nodes_and_zones(base_docs):
    _, pod, _ = _deployment_parts(base_docs)
    constraints = pod["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in constraints} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for constraint in constraints:
        selector = constraint["labelSelector"]["matchLabels"]
        assert selector.items() <= pod["metadata"]["labels"].items()


def test_service_sends_port_80_to_the_pods(base_docs):
    _, pod, container = _deployment_parts(base_docs)
    service = by_kind(base_docs, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    port = by_name(service["spec"]["ports"], "http")
    assert port["port"] == 80 and container_port(container, port["targetPort"]) == CONTAINER_PORT


def test_hpa_targets_the_deployment(base_docs):
    deployment, _, _ = _deployment_parts(base_docs)
    hpa = by_kind(base_docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"], "Deployment", deployment["metadata"]["name"])
    assert hpa["metadata"].get("namespace") == deployment["metadata"].get("namespace")
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert deployment["spec"]["replicas"] == hpa["spec"]["minReplicas"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    assert 50 <= metric["resource"]["target"]["averageUtilization"] <= 90
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60


def test_disruption_budget_and_network_policy_select_the_pods(base_docs):
    _, pod, _ = _deployment_parts(base_docs)
    hpa = by_kind(base_docs, "HorizontalPodAutoscaler")
    labels = pod["metadata"]["labels"]
    pdb = by_kind(base_docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # With the fewest replicas the autoscaler allows, a drain still leaves one serving.
    if "maxUnavailable" in pdb["spec"]:
        assert pdb["spec"]["maxUnavailable"] == 1 and hpa["spec"]["minReplicas"] >= 2
    else:
        assert 1 <= pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    policy = by_kind(base_docs, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    ports = [port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]]
    assert CONTAINER_PORT in ports


def test_the_token_file_comes_from_a_secret_mounted_read_only(base_docs):
    _, pod, container = _deployment_parts(base_docs)
    env = {item["name"]: item for item in container["env"]}
    path = env["AUTH_TOKENS_FILE"]["value"]
    assert "valueFrom" not in env["AUTH_TOKENS_FILE"]            # a file, not a secret in the environment
    [mount] = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert mount["readOnly"] is True and "subPath" not in mount   # subPath mounts never see an edited Secret
    secret = by_name(pod["spec"]["volumes"], mount["name"])["secret"]
    assert secret["secretName"] == "ad-purchase-api-tokens" and not secret.get("optional")
    assert {item["path"] for item in secret["items"]} == {path.rsplit("/", 1)[1]}
    assert secret["defaultMode"] & 0o007 == 0                     # not readable by others


def test_only_the_ingress_and_monitoring_namespaces_may_connect(base_docs, overlay_docs):
    for docs, expected in ((base_docs, {"ingress", "monitoring"}), (overlay_docs, {"ingress-nginx", "monitoring"})):
        policy = by_kind(docs, "NetworkPolicy")
        [rule] = policy["spec"]["ingress"]
        names = set()
        for peer in rule["from"]:
            assert set(peer) == {"namespaceSelector"}, peer     # no ipBlock, no pods of any namespace
            labels = peer["namespaceSelector"]["matchLabels"]   # never {} (every namespace)
            assert set(labels) == {"kubernetes.io/metadata.name"} and not peer["namespaceSelector"].get(
                "matchExpressions")
            names.add(labels["kubernetes.io/metadata.name"])
        assert names == expected
        assert [port["port"] for port in rule["ports"]] == [CONTAINER_PORT]
        # Out: nothing from the base; the overlay's pods reach the decision database and DNS only.
        egress = policy["spec"]["egress"]
        assert all(set(rule) == {"ports"} for rule in egress), egress
        ports = sorted((port["protocol"], port["port"]) for rule in egress for port in rule["ports"])
        assert ports == ([] if docs is base_docs else [("TCP", 53), ("TCP", 5432), ("UDP", 53)])


def test_the_prometheus_example_scrapes_with_a_token_from_a_file():
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "scrape-config.yaml").read_text())
    jobs = config["scrape_configs"]
    assert jobs and all(job["metrics_path"] == "/metrics" for job in jobs)
    for job in jobs:
        auth = job["authorization"]
        assert auth["type"] == "Bearer" and auth["credentials_file"].startswith("/")
        assert "credentials" not in auth and "bearer_token" not in job


def test_every_namespaced_resource_is_in_the_service_namespace(base_docs):
    namespace = by_kind(base_docs, "Namespace")["metadata"]["name"]
    assert namespace != "default"
    for doc in base_docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, doc["kind"]


def test_overlay_sets_the_image_tag(base_docs, overlay_docs):
    kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    _, _, base_container = _deployment_parts(base_docs)
    base_name, base_tag = split_image(base_container["image"])
    [image] = [entry for entry in kustomization["images"] if entry["name"] == base_name]
    tag = str(image["newTag"])
    assert tag and tag != "latest" and tag != base_tag
    _, _, container = _deployment_parts(overlay_docs)
    assert container["image"] == f"{image.get('newName', base_name)}:{tag}"
    # The overlay's replica count and the autoscaler's floor agree.
    deployment = by_kind(overlay_docs, "Deployment")
    assert deployment["spec"]["replicas"] == by_kind(overlay_docs, "HorizontalPodAutoscaler")["spec"]["minReplicas"]


def test_fallback_renderer_agrees_with_kubectl():
    rendered = kubectl_render(OVERLAY)
    if rendered is None:
        pytest.skip("kubectl not installed: the fallback renderer is what the other tests use")
    mine = python_render(OVERLAY)
    key = lambda doc: (doc["kind"], doc["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, mine)) == sorted(map(key, rendered))
    theirs = {key(doc): doc for doc in rendered}
    for doc in mine:
        assert doc.get("spec") == theirs[key(doc)].get("spec"), key(doc)
        assert doc["metadata"].get("namespace") == theirs[key(doc)]["metadata"].get("namespace")


# ---------------------------------------------------------------------------------- compose
@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((COMPOSE / "compose.yaml").read_text())


def test_compose_runs_replicas_of_the_api_behind_nginx(compose):
    api, nginx = compose["services"]["api"], compose["services"]["nginx"]
    assert api["image"] == "ad-purchase-api:local"
    context = (COMPOSE / api["build"]["context"]).resolve()
    assert context == REPO and (context / api["build"].get("dockerfile", "Dockerfile")).is_file()
    assert api["deploy"]["replicas"] == "${API_REPLICAS:-3}"
    assert "ports" not in api, "replicas are reached through nginx only"
    assert api["read_only"] is True
    assert any(entry.split(":")[0] == "/tmp" for entry in api["tmpfs"])
    assert "/ready" in " ".join(api["healthcheck"]["test"])
    assert nginx["image"].startswith("${NGINX_IMAGE:-nginx:")
    assert nginx["depends_on"]["api"]["condition"] == "service_healthy"
    assert nginx["ports"] == ["${PORT:-1313}:1313"]
    [mount] = nginx["volumes"]
    source, target, mode = mount.split(":")
    assert (COMPOSE / source).is_file() and target == "/etc/nginx/nginx.conf" and mode == "ro"
    assert nginx["read_only"] is True and "healthcheck" in nginx


def _docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    return probe.returncode == 0


def test_compose_file_passes_docker_compose_config():
    if not _docker_compose_available():
        pytest.skip("no docker CLI with the compose plugin: the file is checked as YAML above")
    result = subprocess.run(["docker", "compose", "-f", str(COMPOSE / "compose.yaml"), "config", "--quiet"],
                            capture_output=True, text=True, timeout=60, env=offline_env())
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------- load balancer policy
NGINX_CONFIGS = {"compose": COMPOSE / "nginx.conf", "local-cluster": LOCAL_CLUSTER / "nginx.conf.template"}


def _directives(text: str) -> str:
    """The configuration without comments, one directive per line."""
    return "\n".join(line.split("#", 1)[0].strip() for line in text.splitlines())


@pytest.mark.parametrize("which", sorted(NGINX_CONFIGS))
def test_load_balancer_policy(which):
    text = _directives(NGINX_CONFIGS[which].read_text())
    assert re.search(r"^least_conn;$", text, re.M)
    assert re.search(r"^proxy_next_upstream error timeout http_502 http_503 non_idempotent;$", text, re.M)
    assert re.search(r"^proxy_next_upstream_tries [2-9];$", text, re.M)
    assert re.search(r"^client_max_body_size 64m;$", text, re.M)
    for directive in ("proxy_connect_timeout", "proxy_read_timeout", "proxy_send_timeout", "keepalive"):
        assert re.search(rf"^{directive} \S+;$", text, re.M), directive
    assert re.search(r"^add_header X-Upstream \$upstream_addr always;$", text, re.M)
    if which == "compose":
        assert re.search(r"^resolver 127\.0\.0\.11\b", text, re.M)
        assert re.search(r"^server api:1313 resolve max_fails=\d+ fail_timeout=\d+s;$", text, re.M)
    else:
        assert "${UPSTREAM_SERVERS}" in text and "${LISTEN}" in text
        script = (LOCAL_CLUSTER / "cluster.sh").read_text()
        assert re.search(r"server 127\.0\.0\.1:\$p max_fails=\$max_fails fail_timeout=\$fail_timeout;", script)


def test_compose_nginx_conf_passes_nginx_t(tmp_path):
    """The compose nginx.conf through the local nginx's own parser. Debian's nginx (1.22) predates
    `resolve` on upstream servers and has no `nginx` user, so those two are adapted first."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if nginx is None:
        pytest.skip("nginx is not installed (Debian: apt-get install -y nginx)")
    text = (COMPOSE / "nginx.conf").read_text()
    text = text.replace("server api:1313 resolve ", "server 127.0.0.1:1313 ").replace("user nginx;", "")
    text = text.replace("/var/cache/nginx", str(tmp_path)).replace("/tmp/nginx.pid", str(tmp_path / "nginx.pid"))
    (tmp_path / "nginx.conf").write_text(text)
    env = {key: value for key, value in os.environ.items() if key != "NGINX"}
    result = subprocess.run([nginx, "-t", "-p", f"{tmp_path}/", "-c", str(tmp_path / "nginx.conf"),
                             "-e", str(tmp_path / "error.log")], capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 0, result.stderr
