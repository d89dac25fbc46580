"""deploy/compose.yaml, checked offline (no Docker engine and no `docker compose` here).

Issue 13 item 6: "a compose file: Redis with AOF, two jitgate replicas behind one port,
the KEK and Slack/Teams secrets from an env file". The file is parsed as YAML (merge keys
resolved, as compose does) and those properties are checked, together with the HAProxy
configuration in front; then the brokers' settings and mounted files start a broker.
"""

from __future__ import annotations

import base64
import re
import secrets

import httpx
import pytest
import yaml

from broker.config import Settings
from broker.errors import ConfigError
from tests.deploy.common import (DEPLOY, ROOT, SECRET_SETTINGS, read_env_file, settings_read_by_config,
                                 start_broker)

COMPOSE = DEPLOY / "compose.yaml"
HAPROXY = DEPLOY / "haproxy.cfg"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def brokers(compose: dict) -> dict[str, dict]:
    """The services that run the jitgate image (built from deploy/Dockerfile)."""
    return {name: s for name, s in compose["services"].items()
            if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile"}


def env_file_of(service: dict):
    files = service["env_file"]
    assert len(files) == 1
    entry = files[0]
    return DEPLOY / (entry if isinstance(entry, str) else entry["path"])


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_redis_keeps_an_append_only_file_on_a_volume(compose):
    """Item 6: "Redis with AOF": appendonly yes, its data folder on a named volume, a
    healthcheck, and the brokers wait for it to be healthy."""
    redis = compose["services"]["redis"]
    command = redis["command"]
    command = command if isinstance(command, list) else command.split()
    assert command[0] == "redis-server"
    flags = dict(zip(command[1::2], command[2::2]))
    assert flags["--appendonly"] == "yes"
    assert flags.get("--appendfsync", "everysec") in ("everysec", "always")
    volumes = [v.split(":") for v in redis["volumes"]]
    assert any(target == "/data" and source in compose["volumes"] for source, target, *_ in volumes)
    assert redis["healthcheck"]["test"]
    for name, service in brokers(compose).items():
        assert service["depends_on"]["redis"]["condition"] == "service_healthy", name
        assert environment(service)["REDIS_URL"].startswith("redis://redis:"), name


def test_two_brokers_behind_one_port(compose):
    """Item 6: "two jitgate replicas behind one port": two services of the same image and
    settings, each with a healthcheck; one published port, on a proxy whose backend holds
    both brokers at the port they listen on, checked on /readyz."""
    services = brokers(compose)
    assert len(services) == 2
    a, b = services.values()
    assert a == b, "the two brokers must be the same definition"
    assert a["healthcheck"]["test"][1:] == ["jitgate-healthcheck", "/readyz"]
    published = [(name, p) for name, s in compose["services"].items() for p in s.get("ports", [])]
    assert len(published) == 1, published
    proxy_name, port = published[0]
    proxy = compose["services"][proxy_name]
    assert proxy["healthcheck"]["test"]
    assert set(proxy["depends_on"]) == set(services)
    assert all(proxy["depends_on"][s]["condition"] == "service_healthy" for s in services)
    front = str(port).split(":")[-1]

    cfg = HAPROXY.read_text()
    assert any(f"./{HAPROXY.name}:" in v for v in proxy["volumes"])
    assert re.search(rf"^\s*bind\s+:{front}\s*$", cfg, re.M), f"HAProxy does not listen on {front}"
    listen = "8080"  # the image's JITGATE_PORT
    assert "JITGATE_PORT=8080" in (DEPLOY / "Dockerfile").read_text()
    servers = re.findall(r"^\s*server\s+\S+\s+([\w-]+):(\d+)\s+check\b", cfg, re.M)
    assert sorted(servers) == sorted((name, listen) for name in services)
    assert re.search(r"^\s*option\s+httpchk\s+GET\s+/readyz\s*$", cfg, re.M)
    timeout_server = re.search(r"^\s*timeout\s+server\s+(\d+)s\s*$", cfg, re.M)
    assert timeout_server and int(timeout_server.group(1)) > 60, "long polls wait up to 60 s"
    assert "backend" in a["networks"] and "backend" not in proxy["networks"]
    assert compose["networks"]["backend"]["internal"] is True, "Redis must not be reachable from outside"


def test_secrets_come_from_the_env_file_only(compose):
    """Item 6: "the KEK and Slack/Teams secrets from an env file": none is written in the
    compose file, the example env file names them all, the real one is ignored by git and
    by the image build, and the example's key is a placeholder the broker refuses."""
    for name, service in compose["services"].items():
        written = SECRET_SETTINGS & set(environment(service))
        assert not written, f"{name}: {sorted(written)} written in compose.yaml"
        assert not any(secret in str(v) for v in environment(service).values() for secret in SECRET_SETTINGS)
    for name, service in brokers(compose).items():
        env_file = env_file_of(service)
        assert env_file.name == "jitgate.env"
        example = read_env_file(env_file.with_name("jitgate.env.example"))
        assert SECRET_SETTINGS <= set(example)
        assert "deploy/jitgate.env" in (ROOT / ".gitignore").read_text().splitlines()
        assert "deploy/jitgate.env" in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        with pytest.raises(ConfigError, match="JITGATE_KEY_ENCRYPTION_KEY"):
            Settings.from_env({**example, **environment(service)})


def test_every_variable_in_compose_is_a_setting(compose):
    """The compose file and its env file must not drift from the code: every variable they
    give the brokers is one ``broker/config.py`` reads."""
    known = settings_read_by_config()
    for name, service in brokers(compose).items():
        given = set(environment(service)) | set(read_env_file(env_file_of(service).with_name("jitgate.env.example")))
        assert not given - known, f"{name}: not settings of broker/config.py: {sorted(given - known)}"


def test_brokers_hardened(compose):
    """The brokers run as in Kubernetes: read-only root filesystem with a tmpfs /tmp, no
    capabilities, no privilege escalation, the configuration mounted read-only."""
    for name, service in brokers(compose).items():
        assert service["read_only"] is True
        assert "/tmp" in service["tmpfs"]
        assert service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
        assert all(v.endswith(":ro") for v in service["volumes"]), name


def test_the_compose_configuration_starts_a_broker(compose, tmp_path, redis_url, prefix, redis):
    """The brokers' settings (env file example and environment) and the folders mounted
    into them make a broker that starts and is ready (the placeholder key and Redis are
    swapped for local ones)."""
    service = next(iter(brokers(compose).values()))
    mounts = {}
    for volume in service["volumes"]:
        source, target, *_ = volume.split(":")
        assert source.startswith("./")
        mounts[target] = (DEPLOY / source).resolve()
        assert mounts[target].is_dir(), source
    env = {**read_env_file(env_file_of(service).with_name("jitgate.env.example")), **environment(service)}
    kek = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    broker = start_broker({"JITGATE_HOST": "0.0.0.0", **env}, mounts, redis_url=redis_url, prefix=prefix,
                          tmp=tmp_path, kek=kek)
    try:
        assert httpx.get(broker.url + "/readyz", timeout=5).status_code == 200
    finally:
        broker.stop()
