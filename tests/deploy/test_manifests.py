"""The Kubernetes manifests (deploy/k8s), rendered offline with ``kubectl kustomize``.

Issue 13 item 6: "Kubernetes manifests with kustomize: Deployment (2 replicas, readiness
/readyz, liveness /healthz, resources, runAsNonRoot, read-only root filesystem), Service,
PodDisruptionBudget, Secret and ConfigMap for policies and approvers files. A test renders
them offline with kubectl kustomize ... and checks those properties in the rendered objects."
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from broker.config import Settings
from broker.errors import ConfigError
from tests.deploy.common import DEPLOY, SECRET_SETTINGS, settings_read_by_config, start_broker

K8S = DEPLOY / "k8s"


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        reason = "kubectl is not installed, so deploy/k8s cannot be rendered (kubectl kustomize)"
        if os.environ.get("CI"):  # CI must prove the manifests: there, a missing kubectl is a failure
            pytest.fail(reason)
        print(reason)
        pytest.skip(reason)
    out = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"kubectl kustomize deploy/k8s failed:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def deployment(objects) -> dict:
    return one(objects, "Deployment")


def container(objects) -> dict:
    containers = deployment(objects)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["jitgate"]
    return containers[0]


def env_of(objects) -> dict[str, str]:
    """The container's environment as Kubernetes builds it: envFrom sources, then env."""
    c = container(objects)
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            env.update(one(objects, "ConfigMap", source["configMapRef"]["name"]).get("data", {}))
        else:
            secret = one(objects, "Secret", source["secretRef"]["name"])
            env.update({k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()})
    for item in c.get("env", []):
        assert "value" in item, f"{item['name']}: only literal values are used here"
        env[item["name"]] = item["value"]
    return env


def mounted_configmaps(objects) -> dict[str, dict]:
    """mountPath -> the ConfigMap mounted there."""
    pod = deployment(objects)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    out = {}
    for m in container(objects)["volumeMounts"]:
        v = volumes[m["name"]]
        if "configMap" in v:
            out[m["mountPath"]] = one(objects, "ConfigMap", v["configMap"]["name"])
    return out


def test_deployment_runs_two_probed_replicas_with_resources(objects):
    """Item 6: "Deployment (2 replicas, readiness /readyz, liveness /healthz, resources)"."""
    d = deployment(objects)
    assert d["spec"]["replicas"] == 2
    c = container(objects)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    env = env_of(objects)
    assert ports["http"] == int(env["JITGATE_PORT"]), "the container port is where the broker listens"
    assert env["JITGATE_HOST"] == "0.0.0.0", "the broker must listen on the pod address, not loopback"
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["port"] in ("http", ports["http"]), probe
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind]), f"resources.{kind}"
    assert not c["image"].endswith(":latest") and ":" in c["image"], "a pinned image tag"


def test_pods_run_non_root_read_only_without_privileges(objects):
    """Item 6: "runAsNonRoot, read-only root filesystem" (and no privilege escalation, no
    capabilities), with an emptyDir wherever the broker may write."""
    pod = deployment(objects)["spec"]["template"]["spec"]
    c = container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
    assert sc.get("privileged", False) is False
    assert pod.get("automountServiceAccountToken") is False, "the broker never calls the Kubernetes API"

    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = [m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")]
    for m in c["volumeMounts"]:
        v = volumes[m["name"]]
        assert "hostPath" not in v
        if m["mountPath"] in writable:
            assert "emptyDir" in v, f"{m['mountPath']} is writable and must be an emptyDir"
    # What the broker or its libraries may write: the data folder (embedded Redis, demo key;
    # unused with REDIS_URL set) and the temporary folder.
    for path in (env_of(objects)["JITGATE_DATA_DIR"], "/tmp"):
        assert any(path == w or path.startswith(w.rstrip("/") + "/") for w in writable), \
            f"{path} is on the read-only root filesystem"


def test_service_and_disruption_budget_select_the_pods(objects):
    """Item 6: "Service, PodDisruptionBudget": both select the Deployment's pods, the Service
    reaches the broker's port, and the budget keeps one pod of two serving."""
    labels = deployment(objects)["spec"]["template"]["metadata"]["labels"]
    service = one(objects, "Service", "jitgate")
    assert service["spec"]["selector"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in container(objects)["ports"]}
    assert all(p["targetPort"] in ports or p["targetPort"] in ports.values() for p in service["spec"]["ports"])
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 1 <= pdb["spec"]["minAvailable"] < deployment(objects)["spec"]["replicas"]


def test_configmaps_carry_every_policy_and_the_directory_files(objects, tmp_path):
    """Item 6: "ConfigMap for policies and approvers files": every file in
    deploy/k8s/config/policies is in the ConfigMap mounted at JITGATE_POLICY_DIR (none left
    out of kustomization.yaml), the agents, approvers and targets files are where their
    settings point, and the broker's own loaders accept what was rendered."""
    from broker.app import principals
    from broker.directory import Directory
    from broker.identity import Registry
    from broker.policy import PolicyGate

    env = env_of(objects)
    mounts = mounted_configmaps(objects)
    policies = mounts[env["JITGATE_POLICY_DIR"]]["data"]
    on_disk = {p.name: p.read_text() for p in (K8S / "config" / "policies").iterdir() if p.is_file()}
    assert policies == on_disk
    assert any(name.endswith(".cedar") for name in policies)

    files = {}
    for setting in ("JITGATE_AGENTS_FILE", "JITGATE_APPROVERS_FILE", "JITGATE_TARGETS_FILE"):
        path = Path(env[setting])
        assert str(path.parent) in mounts, f"{setting}={path} is not on a mounted ConfigMap"
        data = mounts[str(path.parent)]["data"]
        assert path.name in data, f"{setting}: {path.name} is not in the ConfigMap mounted at {path.parent}"
        files[setting] = tmp_path / path.name
        files[setting].write_text(data[path.name])
    (tmp_path / "policies").mkdir()
    for name, text in policies.items():
        (tmp_path / "policies" / name).write_text(text)
    registry = Registry.load(files["JITGATE_AGENTS_FILE"])
    directory = Directory.load(files["JITGATE_APPROVERS_FILE"], files["JITGATE_TARGETS_FILE"])
    PolicyGate.load(tmp_path / "policies", directory, principals(registry))


def test_secret_is_a_placeholder_the_broker_refuses(objects):
    """Item 6: "Secret ... (no real secrets committed)": the secrets reach the pod only
    through the Secret, and the committed key-encryption key is a placeholder on which the
    broker refuses to start (fail closed), so the example cannot run with a known key."""
    c = container(objects)
    secret_names = [s["secretRef"]["name"] for s in c["envFrom"] if "secretRef" in s]
    assert len(secret_names) == 1
    secret_keys = set(one(objects, "Secret", secret_names[0])["data"])
    assert SECRET_SETTINGS <= secret_keys
    assert not SECRET_SETTINGS & {e["name"] for e in c.get("env", [])}, "a secret written into the Deployment"
    for cm in (o for o in objects if o["kind"] == "ConfigMap"):
        assert not SECRET_SETTINGS & set(cm.get("data", {})), f"a secret in ConfigMap {cm['metadata']['name']}"
    with pytest.raises(ConfigError, match="JITGATE_KEY_ENCRYPTION_KEY"):
        Settings.from_env(env_of(objects))


def test_every_variable_in_the_manifests_is_a_setting(objects):
    """Item 6's files must not drift from the code: every environment variable the
    manifests give the broker is one ``broker/config.py`` reads."""
    unknown = set(env_of(objects)) - settings_read_by_config()
    assert not unknown, f"not settings of broker/config.py: {sorted(unknown)}"


def test_the_rendered_configuration_starts_a_broker(objects, tmp_path, redis_url, prefix, redis):
    """The rendered settings, policies and files make a broker that starts and is ready
    (only the placeholder key, Redis and the mount points are swapped for local ones)."""
    mounts = {}
    for mount_path, cm in mounted_configmaps(objects).items():
        local = tmp_path / cm["metadata"]["name"]
        local.mkdir()
        for name, text in cm["data"].items():
            (local / name).write_text(text)
        mounts[mount_path] = local
    writable = tmp_path / "tmp"
    writable.mkdir()
    mounts["/tmp"] = writable
    kek = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    broker = start_broker(env_of(objects), mounts, redis_url=redis_url, prefix=prefix, tmp=tmp_path, kek=kek)
    try:
        for path in ("/healthz", "/readyz"):
            assert httpx.get(broker.url + path, timeout=5).status_code == 200
        issuer = httpx.get(broker.url + "/.well-known/oauth-authorization-server", timeout=5).json()["issuer"]
        assert issuer == env_of(objects)["JITGATE_ISSUER"]
    finally:
        broker.stop()
