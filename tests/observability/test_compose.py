"""deploy/compose.yaml, checked offline (no Docker engine here, and no compose JSON schema ships in a wheel we
can rely on): its services, commands, variables, mounts and ports agree with the CLI, the settings and
deploy/prometheus.yml. `make image-check` (opt-in) runs it for real with podman-compose."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.cli import build_parser
from gateway.core.settings import setting_specs
from tests.observability.tools import DEPLOY, ROOT

COMPOSE = DEPLOY / "compose.yaml"
REQUIRED = {"redis", "gateway", "worker", "wechatsim", "prometheus", "grafana", "locust"}
SIM_VARIABLES = set(re.findall(r'"(PUSHGW_SIM_[A-Z_]+)"', (ROOT / "wechatsim" / "cli.py").read_text()))
LOCUST_VARIABLES = {
    name
    for path in (ROOT / "loadtest").glob("*.py")
    for name in re.findall(r'"(PUSHGW_LOCUST_[A-Z_]+)"', path.read_text())
}


def services() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(COMPOSE.read_text())
    found: dict[str, dict[str, Any]] = document["services"]
    return found


def pushgw_services() -> dict[str, dict[str, Any]]:
    """The services running the pushgw image (built from the repository's Dockerfile)."""
    return {name: spec for name, spec in services().items() if "build" in spec}


def environment(spec: dict[str, Any]) -> dict[str, str]:
    env = spec.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(key): str(value) for key, value in env.items()}


def test_every_service_is_there() -> None:
    assert REQUIRED <= set(services())
    assert set(pushgw_services()) == {"gateway", "worker", "wechatsim"}
    assert services()["locust"]["profiles"] == ["loadtest"]
    assert all("profiles" not in spec for name, spec in services().items() if name != "locust")


def test_pushgw_services_use_the_one_image_and_real_commands() -> None:
    parser = build_parser()
    for name, spec in pushgw_services().items():
        assert spec["build"] == {"context": "..", "dockerfile": "Dockerfile"}, name
        assert (COMPOSE.parent / spec["build"]["context"] / spec["build"]["dockerfile"]).is_file()
        args = parser.parse_args(spec["command"])  # exits (SystemExit) on anything pushgw does not take
        assert args.command in {"gateway", "worker", "sim"}, name


def test_every_pushgw_variable_is_a_real_setting() -> None:
    known = {spec.metadata["env"] for spec in setting_specs()} | SIM_VARIABLES | LOCUST_VARIABLES
    assert {"PUSHGW_SIM_APPS", "PUSHGW_SIM_CALLBACK_URL"} <= SIM_VARIABLES
    used = {
        variable
        for spec in services().values()
        for variable in environment(spec)
        if variable.startswith("PUSHGW_")
    }
    assert used and used <= known, used - known


def test_the_simulator_and_the_workers_agree() -> None:
    sim = environment(services()["wechatsim"])
    worker = environment(services()["worker"])
    gateway = environment(services()["gateway"])
    appid, _, secret = sim["PUSHGW_SIM_APPS"].partition(":")
    assert (worker["PUSHGW_WECHAT_APPID"], worker["PUSHGW_WECHAT_SECRET"]) == (appid, secret)
    assert worker["PUSHGW_WECHAT_BASE_URL"] == "http://wechatsim:8090"
    assert sim["PUSHGW_SIM_CALLBACK_TOKEN"] == gateway["PUSHGW_WECHAT_CALLBACK_TOKEN"]
    assert sim["PUSHGW_SIM_CALLBACK_URL"].startswith("http://gateway:8080/")
    assert worker["PUSHGW_METRICS_HOST"] == "0.0.0.0"  # noqa: S104 - Prometheus scrapes it from outside


def listening_port(spec: dict[str, Any]) -> int:
    """The port a pushgw service serves /metrics on, from its command and environment."""
    args = build_parser().parse_args(spec["command"])
    if args.command == "worker":
        return int(environment(spec)["PUSHGW_METRICS_PORT"])
    return int(args.port)


def test_prometheus_scrapes_the_compose_services() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    expected = {f"{name}:{listening_port(spec)}" for name, spec in pushgw_services().items()}
    assert targets == expected
    for name, spec in pushgw_services().items():
        if name != "worker":  # the worker's metrics listener binds PUSHGW_METRICS_HOST
            assert spec["command"][spec["command"].index("--host") + 1] == "0.0.0.0", name  # noqa: S104
    prometheus = services()["prometheus"]
    assert "./alerts.yml:/etc/prometheus/alerts.yml:ro" in prometheus["volumes"]
    assert config["rule_files"] == ["alerts.yml"]


def test_grafana_reads_the_provisioning_and_prometheus() -> None:
    grafana = services()["grafana"]
    mounts = {volume.split(":")[0]: volume.split(":")[1] for volume in grafana["volumes"]}
    assert mounts["../grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/pushgw.yml").read_text())
    assert mounts["../grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    datasource = yaml.safe_load((ROOT / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert "9090:9090" in services()["prometheus"]["ports"]


def test_redis_keeps_the_promises() -> None:
    redis = services()["redis"]
    assert "./redis.conf:/usr/local/etc/redis/redis.conf:ro" in redis["volumes"]
    assert redis["command"][:2] == ["redis-server", "/usr/local/etc/redis/redis.conf"]
    conf = (DEPLOY / "redis.conf").read_text().split("\n")
    assert {"appendonly yes", "appendfsync always", "maxmemory-policy noeviction"} <= set(conf)


# ${PUSHGW_REDIS_PASSWORD:?message}: compose refuses to start without it (no default, so no demo password)
PASSWORD = re.compile(r"\$\{PUSHGW_REDIS_PASSWORD:\?[^}]+\}")


def test_redis_requires_a_password_from_the_environment() -> None:
    """Without a password Redis answers other containers DENIED (protected mode): compose gives it one,
    from PUSHGW_REDIS_PASSWORD alone, and every client's URL carries that same variable."""
    redis = services()["redis"]
    command = redis["command"]
    assert PASSWORD.fullmatch(command[command.index("--requirepass") + 1])
    assert PASSWORD.fullmatch(environment(redis)["REDISCLI_AUTH"])  # the healthcheck logs in with it
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"])
    for name in pushgw_services():
        if name != "wechatsim":
            url = environment(services()[name])["PUSHGW_REDIS_URL"]
            assert re.fullmatch(rf"redis://:{PASSWORD.pattern}@redis:6379/0", url), (name, url)
    conf = (DEPLOY / "redis.conf").read_text().split("\n")
    assert "protected-mode yes" in conf
    assert not any(line.startswith(("requirepass", "masterauth", "user ")) for line in conf)


def strings(node: Any) -> list[str]:
    """Every string in a YAML document (keys and values)."""
    if isinstance(node, dict):
        return [text for key, value in node.items() for text in strings(key) + strings(value)]
    if isinstance(node, list):
        return [text for item in node for text in strings(item)]
    return [node] if isinstance(node, str) else []


def test_no_literal_redis_password_anywhere_in_compose() -> None:
    """Every Redis URL's userinfo is the variable, and every use of the variable is the required form (no
    `:-default`): a password written into the repository is a password everyone has."""
    text = "\n".join(strings(yaml.safe_load(COMPOSE.read_text())))  # what compose reads: no comments
    userinfos = re.findall(r"redis://([^@\n]*)@", text)
    assert len(userinfos) == 2 and all(PASSWORD.fullmatch(info.removeprefix(":")) for info in userinfos)
    uses = re.findall(r"\$\{?PUSHGW_REDIS_PASSWORD[^}]*\}?", text)
    assert len(uses) == 4 and all(PASSWORD.fullmatch(use) for use in uses), uses


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_mounted_paths_exist(name: str) -> None:
    for volume in services()[name].get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith("."):  # a bind mount (the others are named volumes)
            assert (COMPOSE.parent / source).resolve().exists(), (name, source)
        else:
            assert source in yaml.safe_load(COMPOSE.read_text())["volumes"], (name, source)


def test_locust_runs_the_repository_locustfile() -> None:
    locust = services()["locust"]
    command = locust["command"]
    locustfile = Path(locust["working_dir"]) / command[command.index("-f") + 1]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in locust["volumes"]}
    mount = mounts[locust["working_dir"]]
    assert (COMPOSE.parent / mount / locustfile.relative_to(locust["working_dir"])).resolve() == (
        ROOT / "loadtest" / "locustfile.py"
    )
    assert command[command.index("--host") + 1] == "http://gateway:8080"
