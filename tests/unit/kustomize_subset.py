"""The part of kustomize that deploy/kubernetes uses, in Python, so the
overlays can be rendered and validated where no kubectl or kustomize binary
exists (this machine, CI).

Supported, with kustomize's meaning: `resources` (files and kustomization
directories), `components`, `namespace`, `images`, `replicas`,
`configMapGenerator` (files, literals; behavior create, merge, replace; the
name-suffix hash of kubectl/kustomize and the references to it in pod
specs) and `patches` given as RFC 6902 JSON patches with a target (kind,
name, labelSelector). Anything else in a kustomization is refused, so the
manifests cannot start using a feature this renderer would silently get
wrong. `kubectl kustomize <dir>` renders the same resources (the order of
fields and resources may differ).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jsonpatch
import yaml

KEYS = {"apiVersion", "kind", "resources", "components", "namespace", "images", "replicas", "configMapGenerator",
        "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PriorityClass",
                  "StorageClass"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


class Unsupported(ValueError):
    """A kustomization uses something this renderer does not implement."""


def config_map_hash(name: str, data: dict) -> str:
    """kustomize's (and kubectl's) ConfigMap name suffix: sha256 of the JSON of kind, name and data."""
    encoded = json.dumps({"data": data, "kind": "ConfigMap", "name": name}, sort_keys=True, separators=(",", ":"),
                         ensure_ascii=False)
    encoded = encoded.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")  # as Go's json does
    return hashlib.sha256(encoded.encode()).hexdigest()[:10].translate(str.maketrans("013ae", "ghkmt"))


def _kustomization(directory: Path) -> dict:
    found = [directory / n for n in ("kustomization.yaml", "kustomization.yml", "Kustomization")
             if (directory / n).is_file()]
    if len(found) != 1:
        raise Unsupported(f"{directory}: expected one kustomization file")
    data = yaml.safe_load(found[0].read_text()) or {}
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise Unsupported(f"{found[0]}: {unknown} not supported by this renderer")
    return data


def _generated(directory: Path, spec: dict) -> dict:
    extra = sorted(set(spec) - {"name", "files", "literals", "behavior"})
    if extra:
        raise Unsupported(f"{directory}: configMapGenerator {spec['name']}: {extra}")
    data: dict[str, str] = {}
    for entry in spec.get("files", []):
        key, _, path = entry.rpartition("=")
        path = directory / path
        if path.resolve().parent != directory.resolve() and directory.resolve() not in path.resolve().parents:
            raise Unsupported(f"{directory}: {entry}: kustomize loads files under the kustomization only")
        data[key or path.name] = path.read_text()
    for literal in spec.get("literals", []):
        key, sep, value = literal.partition("=")
        if not sep:
            raise Unsupported(f"{directory}: literal {literal!r} is not KEY=VALUE")
        data[key] = value
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": spec["name"]}, "data": data}


def _selects(resource: dict, target: dict) -> bool:
    extra = sorted(set(target) - {"kind", "name", "labelSelector"})
    if extra:
        raise Unsupported(f"patch target {extra}")
    if "kind" in target and resource["kind"] != target["kind"]:
        return False
    if "name" in target and resource["metadata"]["name"] != target["name"]:
        return False
    labels = resource["metadata"].get("labels") or {}
    for term in filter(None, (t.strip() for t in target.get("labelSelector", "").split(","))):
        key, sep, value = term.partition("=")
        if not sep or "!" in key:
            raise Unsupported(f"labelSelector {term!r}: only key=value")
        if labels.get(key) != value:
            return False
    return True


def _containers(resource: dict) -> list[dict]:
    spec = resource.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", []) + spec.get("initContainers", [])


def _set_image(container: dict, rule: dict) -> None:
    image = container["image"]
    name, tag = image, None
    if "@" in image:
        name = image.split("@")[0]
    elif ":" in image.rsplit("/", 1)[-1]:
        name, tag = image.rsplit(":", 1)
    if name != rule["name"]:
        return
    new_name = rule.get("newName", name)
    new_tag = rule.get("newTag", tag)
    container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name


def render(directory: Path, top: bool = True) -> list[dict]:
    """The resources a kustomization (or component) directory renders to."""
    directory = Path(directory)
    kustomization = _kustomization(directory)
    resources: list[dict] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            resources += render(path, top=False)
        else:
            resources += [r for r in yaml.safe_load_all(path.read_text()) if r]
    for entry in kustomization.get("components", []):
        component = directory / entry
        if _kustomization(component).get("kind") != "Component":
            raise Unsupported(f"{component}: not a Component")
        resources += render(component, top=False)
    for spec in kustomization.get("configMapGenerator", []):
        made = _generated(directory, spec)
        behavior = spec.get("behavior", "create")
        existing = [r for r in resources if r["kind"] == "ConfigMap" and r["metadata"]["name"] == spec["name"]]
        if behavior == "create":
            if existing:
                raise Unsupported(f"{directory}: ConfigMap {spec['name']} already exists (use behavior merge/replace)")
            made["metadata"]["annotations"] = {"hub.test/generated": "true"}
            resources.append(made)
        elif behavior in ("merge", "replace"):
            if len(existing) != 1:
                raise Unsupported(f"{directory}: {behavior} of ConfigMap {spec['name']}: not generated below")
            if behavior == "replace":
                existing[0]["data"] = made["data"]
            else:
                existing[0]["data"].update(made["data"])
        else:
            raise Unsupported(f"{directory}: behavior {behavior}")
    for patch in kustomization.get("patches", []):
        extra = sorted(set(patch) - {"path", "target"})
        if extra or "path" not in patch:
            raise Unsupported(f"{directory}: patches entry {patch}: only path + target")
        operations = yaml.safe_load((directory / patch["path"]).read_text())
        if not isinstance(operations, list):
            raise Unsupported(f"{directory / patch['path']}: only JSON 6902 patches (a list of operations)")
        matched = [r for r in resources if _selects(r, patch.get("target", {}))]
        if not matched:
            raise Unsupported(f"{directory}: patch {patch['path']} matches no resource")
        for i, resource in enumerate(resources):
            if any(resource is m for m in matched):
                resources[i] = jsonpatch.apply_patch(resource, operations)
    for rule in kustomization.get("images", []):
        for resource in resources:
            for container in _containers(resource):
                _set_image(container, rule)
    for rule in kustomization.get("replicas", []):
        found = [r for r in resources if r["kind"] in WORKLOADS and r["metadata"]["name"] == rule["name"]]
        if not found:
            raise Unsupported(f"{directory}: replicas for unknown {rule['name']}")
        for resource in found:
            resource["spec"]["replicas"] = rule["count"]
    if "namespace" in kustomization:
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = kustomization["namespace"]
    if top:
        resources = _hash_names(resources)
    return resources


def _hash_names(resources: list[dict]) -> list[dict]:
    renamed = {}
    for resource in resources:
        annotations = resource["metadata"].get("annotations") or {}
        if annotations.pop("hub.test/generated", None):
            if not annotations:
                resource["metadata"].pop("annotations")
            old = resource["metadata"]["name"]
            resource["metadata"]["name"] = f"{old}-{config_map_hash(old, resource['data'])}"
            renamed[old] = resource["metadata"]["name"]
    for resource in resources:
        spec = resource.get("spec", {}).get("template", {}).get("spec", {})
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                volume["configMap"]["name"] = renamed.get(volume["configMap"]["name"], volume["configMap"]["name"])
        for container in _containers(resource):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    ref = source["configMapRef"]
                    ref["name"] = renamed.get(ref["name"], ref["name"])
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    ref["name"] = renamed.get(ref["name"], ref["name"])
    return resources
