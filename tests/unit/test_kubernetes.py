"""deploy/kubernetes: every overlay rendered (tests/unit/kustomize_subset.py,
kustomize's semantics for what the overlays use) and every resource validated
offline against Kubernetes' own schemas (kubernetes-validate, strict: unknown
fields fail) for the oldest and newest Kubernetes versions we support; then
what a schema cannot see: every HUB_* variable is a setting the hub reads and
the values make valid settings, files named by settings are mounted, probes,
Services, the HPA, PDBs and the ServiceMonitor point at what exists, pods run
non-root on a read-only root filesystem, and each container's arguments are a
real `hub` command line."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import click
import kubernetes_validate
import pytest
import typer
import yaml
from pydantic import BaseModel

from hub.config import Settings, load_pipeline, load_settings
from hub.crypto import new_key
from kustomize_subset import Unsupported, config_map_hash, render

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
OVERLAYS = ["base", "overlays/staging", "overlays/production"]
# the oldest Kubernetes release still supported upstream when this was written, and the newest schema we have
K8S_VERSIONS = ["1.30", "1.35"]
SECRETS = {s["metadata"]["name"]: s for s in yaml.safe_load_all((KUBE / "secrets.example.yaml").read_text())}
CRDS = {"ServiceMonitor"}  # not in Kubernetes' schemas: checked by hand below
# the example's placeholders where a setting checks its value's form
FILLED = {("hub-secrets", "pii-keys"): f"k1:{new_key()}", ("hub-secrets", "pii-key"): new_key()}


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> list[dict]:
    return render(KUBE / request.param)


def of_kind(resources: list[dict], kind: str) -> list[dict]:
    return [r for r in resources if r["kind"] == kind]


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def setting_names() -> set[str]:
    """Every environment variable hub.config.Settings reads (HUB_ prefix, nested models joined by __)."""
    names: set[str] = set()

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name.upper()}__")
            else:
                names.add(f"{prefix}{name.upper()}")

    walk(Settings, "HUB_")
    return names


def environment(resources: list[dict], container: dict) -> dict[str, str]:
    """A container's environment as the kubelet builds it; secret values from secrets.example.yaml."""
    config_maps = {c["metadata"]["name"]: c for c in of_kind(resources, "ConfigMap")}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]]["data"])
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            env[variable["name"]] = FILLED.get((ref["name"], ref["key"]), SECRETS[ref["name"]]["stringData"][ref["key"]])
    return env


def test_every_resource_validates_against_kubernetes_schemas(rendered):
    checked = 0
    for resource in rendered:
        if resource["kind"] in CRDS:
            continue
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(resource, version, strict=True)
            checked += 1
    assert checked >= 2 * 8


def test_the_example_secrets_validate():
    for secret in SECRETS.values():
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(secret, version, strict=True)


def test_the_validator_catches_a_bad_field():
    deployment = next(r for r in render(KUBE / "base") if r["kind"] == "Deployment")
    pod_spec(deployment)["containers"][0]["livenessProbe"]["httpGet"]["pot"] = 6066
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_every_hub_variable_is_a_setting_and_the_values_are_valid(rendered, monkeypatch):
    known = setting_names()
    assert {"HUB_KAFKA__SECURITY_PROTOCOL", "HUB_KAFKA__SSL_CA_LOCATION", "HUB_REDIS__URL"} <= known
    for workload in of_kind(rendered, "Deployment"):
        for container in pod_spec(workload)["containers"]:
            env = environment(rendered, container)
            unknown = sorted(name for name in env if name.startswith("HUB_") and name not in known)
            assert not unknown, f"{workload['metadata']['name']}: not hub settings: {unknown}"
            assert not [n for n in env if not n.startswith(("HUB_", "PYTHON"))], env
            for name in list(os.environ):
                if name.startswith("HUB_"):
                    monkeypatch.delenv(name)
            for name, value in env.items():
                monkeypatch.setenv(name, value)
            settings = load_settings()  # the overlay's combination passes the settings' own checks
            assert settings.config_file is not None and settings.kafka.bootstrap_servers


def mounts(resources: list[dict], workload: dict, container: dict) -> dict[PurePosixPath, dict]:
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    return {PurePosixPath(m["mountPath"]): volumes[m["name"]] for m in container.get("volumeMounts", [])}


def mounted_file(resources, workload, container, path: str) -> str:
    """The content (or secret key) a container would find at `path`; fails if nothing is mounted there."""
    path = PurePosixPath(path)
    for mount_path, volume in mounts(resources, workload, container).items():
        if path.parent == mount_path:
            if "configMap" in volume:
                data = next(c for c in of_kind(resources, "ConfigMap")
                            if c["metadata"]["name"] == volume["configMap"]["name"])["data"]
                assert path.name in data, f"{path}: not a key of ConfigMap {volume['configMap']['name']}"
                return data[path.name]
            if "secret" in volume:
                secret = SECRETS[volume["secret"]["secretName"]]
                assert path.name in secret["stringData"], f"{path}: not a key of Secret {secret['metadata']['name']}"
                return secret["stringData"][path.name]
    raise AssertionError(f"{workload['metadata']['name']}: nothing mounted at {path.parent} for {path}")


def test_files_named_by_settings_are_mounted(rendered):
    for workload in of_kind(rendered, "Deployment"):
        for container in pod_spec(workload)["containers"]:
            env = environment(rendered, container)
            pipeline_text = mounted_file(rendered, workload, container, env["HUB_CONFIG_FILE"])
            assert yaml.safe_load(pipeline_text)["sources"]
            for name, value in env.items():
                if name.endswith(("_FILE", "_LOCATION")) and name != "HUB_CONFIG_FILE":
                    mounted_file(rendered, workload, container, value)
            state = env.get("HUB_STATE_DIR")
            assert bool(state) == (container["args"][0] == "run")  # only a worker keeps local state
            if state:
                volume = mounts(rendered, workload, container)[PurePosixPath(state)]
                assert "emptyDir" in volume, f"{workload['metadata']['name']}: HUB_STATE_DIR must be writable"


def test_the_pipeline_config_maps_load(rendered, tmp_path):
    pipelines = [c for c in of_kind(rendered, "ConfigMap") if "hub.yaml" in c["data"]]
    assert len(pipelines) == 1
    path = tmp_path / "hub.yaml"
    path.write_text(pipelines[0]["data"]["hub.yaml"])
    pipeline = load_pipeline(path)
    connect = [d for d in of_kind(rendered, "Deployment") if d["metadata"]["name"] == "hub-connect"]
    # `hub connect` exits at once when the pipeline has no connectors: deploy it only with some
    assert bool(connect) == bool(pipeline.connectors)


def test_pods_run_non_root_on_a_read_only_root_filesystem(rendered):
    for workload in of_kind(rendered, "Deployment"):
        spec = pod_spec(workload)
        name = workload["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == 10001, name  # the Dockerfile's user
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            writable = [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")]
            assert "/tmp" in writable, name
            resources = container["resources"]
            assert resources["requests"]["cpu"] and resources["requests"]["memory"], name
            assert resources["limits"]["memory"], name


def probe_port(container: dict, probe: dict) -> int:
    port = probe["httpGet"]["port"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    return ports[port] if isinstance(port, str) else port


def test_workers_have_probes_on_health_and_shut_down_gracefully(rendered):
    worker = next(d for d in of_kind(rendered, "Deployment") if d["metadata"]["name"] == "hub-worker")
    spec = pod_spec(worker)
    container = spec["containers"][0]
    assert container["args"] == ["run"]
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container[kind]
        assert probe["httpGet"]["path"].split("?")[0] == "/health", kind
        assert probe_port(container, probe) == 6066, kind
    assert container["readinessProbe"]["httpGet"]["path"] == "/health?ready=1"
    # a minute of failed liveness before a restart: a Redis blip must not restart every worker at once
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 60
    assert spec["terminationGracePeriodSeconds"] >= 30
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    annotations = worker["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "6066"


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_services_budgets_and_the_autoscaler_point_at_what_exists(rendered):
    deployments = {d["metadata"]["name"]: d for d in of_kind(rendered, "Deployment")}
    for service in of_kind(rendered, "Service"):
        targets = [d for d in deployments.values()
                   if selects(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])]
        assert len(targets) == 1, service["metadata"]["name"]
        port_names = {p["name"] for p in pod_spec(targets[0])["containers"][0]["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, (service["metadata"]["name"], port)
    for budget in of_kind(rendered, "PodDisruptionBudget"):
        targets = [d for d in deployments.values()
                   if selects(budget["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"])]
        assert len(targets) == 1, budget["metadata"]["name"]
    for deployment in deployments.values():  # a selector the pod template does not carry is rejected by the API
        assert selects(deployment["spec"]["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"])
    (autoscaler,) = of_kind(rendered, "HorizontalPodAutoscaler")
    target = autoscaler["spec"]["scaleTargetRef"]
    assert target["kind"] == "Deployment" and target["name"] == "hub-lookup" in deployments
    lookup = pod_spec(deployments["hub-lookup"])["containers"][0]
    assert lookup["resources"]["requests"]["cpu"]  # CPU utilisation is relative to the request
    assert {"readinessProbe", "livenessProbe"} <= set(lookup)
    assert lookup["readinessProbe"]["httpGet"]["path"] == "/health"
    assert autoscaler["spec"]["minReplicas"] >= 2


def test_the_service_monitor_scrapes_every_metrics_port(rendered):
    monitors = of_kind(rendered, "ServiceMonitor")
    if not monitors:
        return  # the overlay relies on the pods' prometheus.io annotations
    (monitor,) = monitors
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    scraped = {e["port"] for e in monitor["spec"]["endpoints"]}
    assert all(e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])
    services = [s for s in of_kind(rendered, "Service")
                if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
    assert services and all({p["name"] for p in s["spec"]["ports"]} & scraped for s in services)
    assert {s["metadata"]["name"] for s in services} == {s["metadata"]["name"] for s in of_kind(rendered, "Service")}


def test_container_arguments_are_hub_command_lines(rendered):
    from hub.cli import cli

    group = typer.main.get_command(cli)
    for workload in of_kind(rendered, "Deployment"):
        for container in pod_spec(workload)["containers"]:
            args = container["args"]
            command = group.get_command(click.Context(group), args[0])
            assert command is not None, args
            command.make_context(args[0], list(args[1:]))  # raises on an unknown option or a bad value


def test_overlays(rendered):
    """What each overlay is for: images from a registry, its namespace, its replicas, Kafka security in production."""
    names = {r["metadata"]["name"] for r in rendered}
    images = {c["image"] for d in of_kind(rendered, "Deployment") for c in pod_spec(d)["containers"]}
    namespaces = {r["metadata"].get("namespace") for r in rendered}
    worker = next(d for d in of_kind(rendered, "Deployment") if d["metadata"]["name"] == "hub-worker")
    env = environment(rendered, pod_spec(worker)["containers"][0])
    if namespaces == {None}:  # base
        assert images == {"cmdm-hub:0.1.0"} and "hub-connect" not in names
        return
    assert images == {"registry.example.com/cmdm-hub:0.1.0"}
    if namespaces == {"hub"}:  # production
        assert worker["spec"]["replicas"] == 4 and "hub-connect" in names
        assert env["HUB_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"
        assert pod_spec(worker)["containers"][0]["resources"]["requests"]["cpu"] == "2"
        for deployment in of_kind(rendered, "Deployment"):
            assert any(v.get("secret", {}).get("secretName") == "hub-kafka" for v in pod_spec(deployment)["volumes"])
    else:
        assert namespaces == {"hub-staging"} and worker["spec"]["replicas"] == 1
        assert env["HUB_KAFKA__BOOTSTRAP_SERVERS"].endswith(":9092") and "HUB_KAFKA__SECURITY_PROTOCOL" not in env


def test_a_changed_pipeline_renames_its_config_map():
    """The hash suffix rolls the pods when the pipeline changes (kubectl's published test vectors)."""
    assert config_map_hash("foo", {}) == "867km9574f"
    assert config_map_hash("foo", {"key1": "value1", "key2": "value2"}) == "gcb75dd9gb"
    base = render(KUBE / "base")
    worker = next(d for d in of_kind(base, "Deployment") if d["metadata"]["name"] == "hub-worker")
    pipeline = next(c for c in of_kind(base, "ConfigMap") if c["metadata"]["name"].startswith("hub-pipeline-"))
    assert {"name": "pipeline", "configMap": {"name": pipeline["metadata"]["name"]}} in pod_spec(worker)["volumes"]


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\ncommonLabels: {a: b}\n")
    with pytest.raises(Unsupported, match="commonLabels"):
        render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("resources: [../x.yaml]\npatches: [{path: p.yaml}]\n")
    (tmp_path.parent / "x.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {}\n")
    (tmp_path / "p.yaml").write_text("metadata: {labels: {a: b}}\n")  # strategic merge
    with pytest.raises(Unsupported, match="JSON 6902"):
        render(tmp_path)
