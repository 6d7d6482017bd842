"""The Kubernetes manifests in deploy/kubernetes, checked offline: each overlay rendered by the real
``kubectl kustomize``, every document validated against the Kubernetes API schemas of kubernetes-validate
(strict: unknown fields refused) or, for the KEDA and Prometheus Operator resources, against the JSON
schemas in tests/deploy/schemas; then what a reviewer would check: probes, grace period against the
config's drain and shutdown times, security context, writable volumes, the config loaded by the router's
own loader with the Secrets deploy/README.md tells the user to create, the ServiceMonitor against the
Service, the KEDA triggers against the routes."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from router.config.loader import load_config_text
from router.config.models import ServerConfig
from router.config.units import parse_duration
from tests.unavailable import unavailable

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
SCHEMAS = Path(__file__).with_name("schemas")
OVERLAYS = ("sqlite", "postgresql", "keda")
# The oldest Kubernetes release kubernetes-validate ships schemas for (what deploy/README.md promises) and
# a recent one: a field removed or renamed in between fails one of them.
KUBERNETES_VERSIONS = ("1.25.0", "1.32.0")
IMAGE_UID = 10001  # Dockerfile: useradd --uid 10001 (checked below)

Doc = dict[str, Any]


def _kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        reason = "kubectl not installed (it renders the kustomizations); .ci/run installs kubernetes-client"
        unavailable(reason)
    return found


def kustomize(path: Path) -> list[Doc]:
    """The documents ``kubectl kustomize path`` renders."""
    proc = subprocess.run([_kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert docs, f"kubectl kustomize {path} rendered nothing"
    return docs


_rendered: dict[str, list[Doc]] = {}


def rendered(name: str) -> list[Doc]:
    """An overlay (or "monitoring") rendered once per test session."""
    if name not in _rendered:
        path = KUBERNETES / "monitoring" if name == "monitoring" else KUBERNETES / "overlays" / name
        _rendered[name] = kustomize(path)
    return _rendered[name]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def container(docs: list[Doc]) -> Doc:
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return one_named(containers, "router")


def one_named(items: list[Doc], name: str) -> Doc:
    found = [i for i in items if i.get("name") == name]
    assert len(found) == 1, f"expected one item named {name!r}, got {[i.get('name') for i in items]}"
    return found[0]


def router_config_text(docs: list[Doc]) -> str:
    return str(configmap(docs)["data"]["config.yaml"])


def configmap(docs: list[Doc]) -> Doc:
    return one([d for d in docs if d["metadata"]["name"].startswith("router-config")], "ConfigMap")


def readme_secrets() -> dict[tuple[str, str], str]:
    """(secret, key) -> example value of every ``kubectl create secret generic`` in deploy/README.md."""
    text = (DEPLOY / "README.md").read_text().replace("\\\n", " ")
    secrets: dict[tuple[str, str], str] = {}
    for line in text.splitlines():
        if "create secret generic" not in line:
            continue
        words = shlex.split(line)
        name = words[words.index("generic") + 1]
        for word in words:
            if word.startswith("--from-literal="):
                key, _, value = word.removeprefix("--from-literal=").partition("=")
                secrets[(name, key)] = value
    return secrets


def container_env(docs: list[Doc]) -> dict[str, str]:
    """The router container's environment as the pod would get it, Secrets filled in from the README's
    examples; fails on a Secret key the README does not tell the user to create (unless optional)."""
    secrets = readme_secrets()
    env: dict[str, str] = {}
    for var in container(docs).get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        key = (ref["name"], ref["key"])
        if key in secrets:
            env[var["name"]] = secrets[key]
        else:
            assert ref.get("optional"), (
                f"env {var['name']}: Secret {key[0]} key {key[1]} is required but deploy/README.md does not "
                "say how to create it")
    assert not container(docs).get("envFrom"), "envFrom would hide which variables the config gets"
    return env


def image_env() -> dict[str, str]:
    """The ENV the Dockerfile sets (the container sees them under the pod's env)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for word in shlex.split(line[4:]):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def load_deployed_config(docs: list[Doc]) -> Any:
    """The rendered ConfigMap's config through the router's own loader, with the pod's environment. The
    image holds the repository's examples/ at /app/examples (Dockerfile), so `code:` is pointed there."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY examples /app/examples" in dockerfile
    text = router_config_text(docs).replace("/app/examples/", f"{ROOT / 'examples'}/")
    env = {**image_env(), **container_env(docs)}
    return load_config_text(text, "router-config/config.yaml", env, config_dir=ROOT)


# --- the schemas ------------------------------------------------------------------------------------------

def _crd_schemas() -> dict[tuple[str, str], Any]:
    schemas = {}
    for path in SCHEMAS.glob("*.json"):
        schema = json.loads(path.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        props = schema["properties"]
        schemas[(props["apiVersion"]["const"], props["kind"]["const"])] = schema
    return schemas


CRD_SCHEMAS = _crd_schemas()


@pytest.mark.parametrize("name", [*OVERLAYS, "monitoring"])
def test_every_rendered_document_passes_its_schema(name: str) -> None:
    docs = rendered(name)
    for doc in docs:
        where = f"{name}: {doc['kind']} {doc['metadata']['name']}"
        crd = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
        if crd is not None:
            errors = sorted(jsonschema.Draft202012Validator(crd).iter_errors(doc), key=str)
            shown = "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
            assert not errors, f"{where}: {shown}"
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{where} (Kubernetes {version}): {list(exc.absolute_path)}: {exc.message}")


def test_the_crd_schemas_refuse_what_kubernetes_would_not_store() -> None:
    """The hand-written schemas are not vacuous: a misspelt field and a number where KEDA wants a string
    are refused."""
    scaled = one(rendered("keda"), "ScaledObject")
    validator = jsonschema.Draft202012Validator(CRD_SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")])
    assert validator.is_valid(scaled)
    typo = json.loads(json.dumps(scaled))
    typo["spec"]["maxReplicas"] = typo["spec"].pop("maxReplicaCount")
    assert not validator.is_valid(typo)
    number = json.loads(json.dumps(scaled))
    number["spec"]["triggers"][0]["metadata"]["queueLength"] = 20
    assert not validator.is_valid(number)
    monitor = one(rendered("monitoring"), "ServiceMonitor")
    sm_schema = CRD_SCHEMAS[("monitoring.coreos.com/v1", "ServiceMonitor")]
    sm_validator = jsonschema.Draft202012Validator(sm_schema)
    assert sm_validator.is_valid(monitor)
    bad = json.loads(json.dumps(monitor))
    bad["spec"]["endpoints"][0]["interval"] = "15 seconds"
    assert not sm_validator.is_valid(bad)


def test_the_kubernetes_schemas_refuse_a_misspelt_field() -> None:
    deployment = json.loads(json.dumps(one(rendered("sqlite"), "Deployment")))
    kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_has_every_part(overlay: str) -> None:
    docs = rendered(overlay)
    kinds = {d["kind"] for d in docs}
    assert kinds >= {"Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service",
                     "PodDisruptionBudget"}
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"router"}
    deployment = one(docs, "Deployment", "router")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    pdb = one(docs, "PodDisruptionBudget", "router")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1  # never blocks a node drain, even with one replica
    service = one(docs, "Service", "router")
    assert service["spec"]["selector"].items() <= labels.items()


# --- what a reviewer checks --------------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_ask_livez_and_readyz_on_the_container_port(overlay: str) -> None:
    c = container(rendered(overlay))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8080}
    probes = (("startupProbe", "/livez"), ("livenessProbe", "/livez"), ("readinessProbe", "/readyz"))
    for probe, path in probes:
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["port"] in ("http", 8080), probe
    config = yaml.safe_load(router_config_text(rendered(overlay)))
    assert config["server"]["port"] == ports["http"]
    assert config["server"]["host"] == "0.0.0.0"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_covers_prestop_drain_delay_and_shutdown_timeout(overlay: str) -> None:
    docs = rendered(overlay)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    server = yaml.safe_load(router_config_text(docs))["server"]
    drain = parse_duration(server.get("drain_delay", 0))
    default_shutdown = ServerConfig.model_fields["shutdown_timeout"].default
    shutdown = parse_duration(server.get("shutdown_timeout", default_shutdown))
    assert drain == 5.0, "the deployed config drains for 5 s (server.drain_delay)"
    command = container(docs)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", command
    assert len(command) == 2, command
    pre_stop = float(command[1])
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > pre_stop + drain + shutdown, (grace, pre_stop, drain, shutdown)
    assert grace <= pre_stop + drain + shutdown + 15, "a margin, not an hour of SIGKILL-free hanging"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_security_context_is_restricted(overlay: str) -> None:
    docs = rendered(overlay)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert re.search(rf"useradd --uid {IMAGE_UID}\b", (ROOT / "Dockerfile").read_text())
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert (psc["runAsUser"], psc["runAsGroup"], psc["fsGroup"]) == (IMAGE_UID,) * 3
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    csc = container(docs)["securityContext"]
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["privileged"] is False
    assert csc["capabilities"] == {"drop": ["ALL"]}
    namespace = one(docs, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_router_writes_only_to_volumes(overlay: str) -> None:
    """The root filesystem is read-only: the state directory (SQLite file and lock, file destinations) and
    /tmp (environments' scratch dirs: tempfile.mkdtemp) are volumes."""
    docs = rendered(overlay)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container(docs)["volumeMounts"]}
    writable = {path for path, m in mounts.items() if not m.get("readOnly")}
    assert {"/tmp", "/var/lib/router"} <= writable
    assert mounts["/etc/router"]["readOnly"] is True
    assert volumes[mounts["/etc/router"]["name"]]["configMap"]["name"] == configmap(docs)["metadata"]["name"]
    state_volume = volumes[mounts["/var/lib/router"]["name"]]
    if overlay == "sqlite":
        claim = state_volume["persistentVolumeClaim"]["claimName"]
        assert one(docs, "PersistentVolumeClaim", claim)
        assert one(docs, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
        assert one(docs, "Deployment")["spec"]["replicas"] == 1
    else:
        assert set(state_volume) == {"name", "emptyDir"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_files_the_config_names_are_on_writable_volumes(overlay: str) -> None:
    docs = rendered(overlay)
    writable = {m["mountPath"] for m in container(docs)["volumeMounts"] if not m.get("readOnly")}
    config = load_deployed_config(docs)
    paths = [config.state.url.removeprefix("sqlite:///")] if config.state.url.startswith("sqlite") else []
    for fn in config.functions.values():
        for dest in (fn.async_.on_success, fn.async_.on_failure) if fn.async_ else ():
            if dest is not None and dest.type == "file":
                paths.append(str(dest.path))
    assert paths, "the config names no file (the failures.jsonl destination is expected)"
    for path in paths:
        assert any(path.startswith(w + "/") for w in writable), f"{path} is not on a writable volume"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_configmap_loads_with_the_router_config_loader(overlay: str) -> None:
    """Every ${VAR} of the config is given by the pod (a value, or a Secret the README says how to create),
    and the result passes the router's own validation and cross-checks."""
    docs = rendered(overlay)
    config = load_deployed_config(docs)
    assert config.server.drain_delay == 5.0
    assert config.server.port == 8080
    if overlay == "sqlite":
        assert config.state.url == "sqlite:////var/lib/router/state.db"
    else:
        assert config.state.url.startswith("postgresql://")
    routes = {r.name: r.source.type for r in config.routes}
    if overlay == "keda":
        assert (routes["orders"], routes["jobs"]) == ("sqs", "amqp")


def test_an_unset_required_variable_is_refused_by_the_loader() -> None:
    """The loader check above can fail: without the Secret's value, ${ROUTER_STATE} in the keda config
    (and ${JOBS_AMQP_URL}) are refused."""
    from router.errors import ConfigError

    docs = rendered("keda")
    text = router_config_text(docs).replace("/app/examples/", f"{ROOT / 'examples'}/")
    env = {k: v for k, v in {**image_env(), **container_env(docs)}.items() if k != "JOBS_AMQP_URL"}
    with pytest.raises(ConfigError, match="JOBS_AMQP_URL"):
        load_config_text(text, "router-config/config.yaml", env, config_dir=ROOT)


def test_a_changed_config_renames_the_configmap_and_rolls_the_deployment(tmp_path: Path) -> None:
    before = rendered("sqlite")
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    with (copy / "kubernetes" / "base" / "router.yaml").open("a") as f:
        f.write("# changed\n")
    after = kustomize(copy / "kubernetes" / "overlays" / "sqlite")
    old, new = configmap(before)["metadata"]["name"], configmap(after)["metadata"]["name"]
    assert re.fullmatch(r"router-config-[a-z0-9]{10}", old), old
    assert old != new

    def referenced(docs: list[Doc]) -> set[str]:
        return {v["configMap"]["name"] for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
                if "configMap" in v}

    assert referenced(before) == {old}
    assert referenced(after) == {new}


def test_the_servicemonitor_selects_the_service_and_its_port() -> None:
    monitor = one(rendered("monitoring"), "ServiceMonitor", "router")
    for overlay in OVERLAYS:
        docs = rendered(overlay)
        service = one(docs, "Service", "router")
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert service["metadata"]["namespace"] in monitor["spec"]["namespaceSelector"]["matchNames"]
        (endpoint,) = monitor["spec"]["endpoints"]
        port = one_named(service["spec"]["ports"], endpoint["port"])
        container_ports = {p["name"]: p["containerPort"] for p in container(docs)["ports"]}
        assert port["targetPort"] in container_ports
        assert endpoint["path"] == "/metrics"


def test_the_dashboard_configmap_holds_the_dashboard() -> None:
    dashboard = one(rendered("monitoring"), "ConfigMap", "router-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    committed = json.loads((DEPLOY / "grafana" / "router.json").read_text())
    assert json.loads(dashboard["data"]["router.json"]) == committed


def test_keda_scales_the_deployment_on_the_routes_queues_and_the_async_queue() -> None:
    docs = rendered("keda")
    deployment = one(docs, "Deployment", "router")
    assert "replicas" not in deployment["spec"], "the HPA owns replicas; re-applying must not reset them"
    scaled = one(docs, "ScaledObject")
    assert [d["kind"] for d in docs].count("ScaledObject") == 1, "KEDA allows one ScaledObject per workload"
    target = scaled["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "router")
    assert scaled["spec"]["minReplicaCount"] >= 2
    triggers = {t["type"]: t for t in scaled["spec"]["triggers"]}
    assert set(triggers) == {"aws-sqs-queue", "rabbitmq", "prometheus"}
    config = yaml.safe_load(router_config_text(docs))
    routes = {r["source"]["type"]: r for r in config["routes"]}
    env = container_env(docs)

    sqs = triggers["aws-sqs-queue"]["metadata"]
    assert routes["sqs"]["source"]["queue_url"] == "${" + sqs["queueURLFromEnv"] + "}"
    assert env[sqs["queueURLFromEnv"]].startswith("https://sqs.")
    assert sqs["awsRegion"] == env["AWS_REGION"]
    assert triggers["rabbitmq"]["metadata"]["queueName"] == routes["amqp"]["source"]["queue"]

    auths = {d["metadata"]["name"]: d for d in docs if d["kind"] == "TriggerAuthentication"}
    secrets = readme_secrets()
    for trigger in triggers.values():
        if "authenticationRef" in trigger:
            auth = auths[trigger["authenticationRef"]["name"]]
            for ref in auth["spec"]["secretTargetRef"]:
                assert (ref["name"], ref["key"]) in secrets, f"deploy/README.md does not create {ref}"
    assert triggers["rabbitmq"]["authenticationRef"]["name"] == "router-amqp"
    (host,) = [r for r in auths["router-amqp"]["spec"]["secretTargetRef"] if r["parameter"] == "host"]
    assert secrets[(host["name"], host["key"])].startswith("amqp://")

    query = triggers["prometheus"]["metadata"]["query"]
    assert "router_async_queue_depth" in query
    assert "max by (function)" in query, "every replica reports the whole queue: summing replicas overcounts"


def test_the_rendered_manifests_carry_no_secret_value() -> None:
    values = [v for v in readme_secrets().values() if len(v) >= 4]
    assert values
    for name in (*OVERLAYS, "monitoring"):
        text = yaml.safe_dump_all(rendered(name))
        for value in values:
            assert value not in text, f"{name}: a Secret's value is in the manifests"


@pytest.fixture(scope="module", autouse=True)
def _forget_renders() -> Iterator[None]:
    yield
    _rendered.clear()
