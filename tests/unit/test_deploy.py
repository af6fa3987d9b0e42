"""The deployment files, validated without a Docker engine or a cluster.

* ``docker-compose.yml`` against the Compose Specification's JSON Schema (the copy that
  ``check-jsonschema`` ships, with its licence, in ``builtin_schemas/vendor``), then Tokenpulse's own
  rules: healthchecks everywhere, ``depends_on: condition: service_healthy``, secrets as ``${X:?…}``,
  every service scraped by Prometheus, topics with enough partitions for the replicas.
* ``deploy/k8s``: the base and every overlay rendered by kustomize (``kubectl kustomize``, the kustomize
  built into kubectl; or a standalone ``kustomize``), every object validated against the Kubernetes
  OpenAPI schemas with ``kubernetes-validate`` (offline, strict: unknown fields fail), then probes,
  resources, PodDisruptionBudgets, autoscalers and settings.
* Both: every ``TOKENPULSE_*`` variable they set is a setting the code reads (a typo would silently
  do nothing), and the settings a production service cannot start without are set.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from tokenpulse_shared.settings import Settings, variables

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
K8S = ROOT / "deploy" / "k8s"
TOKENPULSE = ("ingest", "scoring", "alerts", "gateway")
KNOWN = {v.name for v in variables()}
SECRETS = {"CLICKHOUSE_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "TOKENPULSE_ADMIN_TOKEN", "TOKENPULSE_ALERTS_SIGNING_KEY"}
# what each service cannot run without in production (the rest has defaults)
REQUIRED = {
    "ingest": {"TOKENPULSE_KAFKA_BOOTSTRAP"},
    "scoring": {"TOKENPULSE_KAFKA_BOOTSTRAP", "TOKENPULSE_CLICKHOUSE_URL"},  # read-only warm-up after a restart
    "alerts": {"TOKENPULSE_KAFKA_BOOTSTRAP", "TOKENPULSE_ALERTS_SIGNING_KEY"},
    "gateway": {
        "TOKENPULSE_KAFKA_BOOTSTRAP",
        "TOKENPULSE_CLICKHOUSE_URL",
        "TOKENPULSE_ADMIN_TOKEN",
        "TOKENPULSE_ALERTS_SIGNING_KEY",
        "TOKENPULSE_REDIS_URL",
    },
}
OPS = {"TOKENPULSE_METRICS_PORT", "TOKENPULSE_HOST"}  # every service serves /healthz, /readyz, /metrics
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


# --------------------------------------------------------------------------------------- compose


@cache
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))  # anchors and `<<` merge keys resolved


def compose_env(service: str) -> dict[str, str]:
    env = compose()["services"][service].get("environment", {})
    return {k: str(v) for k, v in env.items()} if isinstance(env, dict) else dict(e.split("=", 1) for e in env)


def test_the_compose_file_is_valid_against_the_compose_specification() -> None:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendor / "compose-spec.json").read_text())
    assert (vendor / "licenses" / "LICENSE.compose-spec").is_file()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose())]
    assert errors == []
    # the validator does catch mistakes: a misspelt key and a wrong type fail
    broken = json.loads(json.dumps(compose()))
    broken["services"]["gateway"]["healthcheck"]["intervall"] = "5s"
    broken["services"]["kafka"]["ports"] = "9094"
    assert len(list(validator.iter_errors(broken))) >= 2


def test_every_compose_service_has_a_healthcheck_and_waits_for_healthy_dependencies() -> None:
    services = compose()["services"]
    assert set(TOKENPULSE) <= set(services)
    for name, svc in services.items():
        check = svc.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        depends = svc.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must name conditions"
        for dep, spec in depends.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert spec == {"condition": "service_healthy"}, f"{name} -> {dep}: {spec}"
    for name in TOKENPULSE:
        deps = services[name]["depends_on"]
        assert "kafka" in deps and "otel-collector" in deps
        assert services[name]["command"] == ["run", name]
        assert services[name]["healthcheck"]["test"] == ["CMD", "tokenpulse-healthcheck"]
    assert {"clickhouse", "redis"} <= set(services["gateway"]["depends_on"])
    assert "clickhouse" in services["scoring"]["depends_on"]


def strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in strings(k) + strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return [node] if isinstance(node, str) else []


def test_compose_variables_have_defaults_and_secrets_are_required() -> None:
    text = "\n".join(strings(compose()))  # values only, not comments
    found: dict[str, set[str]] = {}
    for name, op, _ in VAR.findall(text):
        found.setdefault(name, set()).add(op)
    assert found, "no ${...} variables found"
    for name, ops in found.items():
        assert "" not in ops, f"${{{name}}} has neither a default (:-) nor a required message (:?)"
        if name in SECRETS:
            assert ops == {":?"}, f"{name} is a secret: it must be required (${{{name}:?…}}), never defaulted"
        else:
            assert ":?" not in ops, f"{name} is not a secret: give it a default"
    assert set(found) >= SECRETS
    example = {line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines() if "=" in line}
    assert example >= SECRETS  # `cp .env.example .env` lists what must be filled in
    # the message says what to do
    for message in re.findall(r"\$\{[A-Z_]+:\?([^}]*)\}", text):
        assert ".env.example" in message


def test_compose_sets_only_real_settings_and_what_production_needs() -> None:
    for name in TOKENPULSE:
        env = compose_env(name)
        unknown = {k for k in env if k.startswith("TOKENPULSE_")} - KNOWN
        assert not unknown, f"{name} sets variables no code reads: {unknown}"
        assert REQUIRED[name] | OPS <= set(env), f"{name} lacks {REQUIRED[name] | OPS - set(env)}"
        assert env["TOKENPULSE_LOG_FORMAT"] == "json" and env["TOKENPULSE_OTEL_EXPORTER"] == "otlp"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://otel-collector:4318")
        assert env["TOKENPULSE_KAFKA_BOOTSTRAP"] == "kafka:9092"
        grace = compose()["services"][name]["stop_grace_period"]
        assert float(env["TOKENPULSE_SHUTDOWN_GRACE_S"]) < float(grace.rstrip("s")), name
    # the gateway's DSN carries the required password
    assert ":?" in compose_env("gateway")["TOKENPULSE_CLICKHOUSE_URL"]


def test_prometheus_scrapes_every_service_on_its_metrics_port() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "compose" / "prometheus.yml").read_text())
    targets = {
        name: sd["port"]
        for job in config["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    }
    assert targets == {"gateway": 8000, "ingest": 9464, "scoring": 9464, "alerts": 9464}
    for name in ("ingest", "scoring", "alerts"):
        assert compose_env(name)["TOKENPULSE_METRICS_PORT"] == "9464"
    volumes = compose()["services"]["prometheus"]["volumes"]
    assert any(v.startswith("./deploy/compose/prometheus.yml:") for v in volumes)


def test_the_grafana_dashboard_has_throughput_lag_latency_and_error_panels() -> None:
    board = json.loads((ROOT / "deploy/compose/grafana/dashboards/tokenpulse-overview.json").read_text())
    exprs = " ".join(t["expr"] for p in board["panels"] for t in p["targets"])
    for metric in (
        "tokenpulse_events_consumed_total",
        "tokenpulse_events_published_total",
        "tokenpulse_batch_processing_seconds_bucket",
        "tokenpulse_event_age_seconds_bucket",
        "tokenpulse_consumer_lag",
        "kafka_consumergroup_lag",
        "tokenpulse_dead_letters_total",
        "tokenpulse_connector_up",
        "tokenpulse_feed_connected",
        "http_requests_total",
        "http_request_duration_highr_seconds_bucket",
    ):
        assert metric in exprs, metric
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    # every family the dashboard plots is one the code defines (or a library/exporter's)
    from tokenpulse_shared import telemetry

    # (tokenpulse_feed_*: the exchange connectors' own families, defined in tokenpulse_ingest.venues)
    ours = set(re.findall(r"tokenpulse_[a-z_]+", exprs)) - set(re.findall(r"tokenpulse_feed_[a-z_]+", exprs))
    defined = {m._name for m in vars(telemetry).values() if hasattr(m, "_name") and hasattr(m, "_type")}
    assert {re.sub(r"_(total|bucket|sum|count)$", "", m) for m in ours} <= defined


def test_topics_have_enough_partitions_for_the_replicas() -> None:
    kafka = compose()["services"]["kafka"]["environment"]
    assert int(kafka["KAFKA_NUM_PARTITIONS"]) >= Settings().bus.kafka_partitions
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # the services create them, with their settings


# --------------------------------------------------------------------------------------- kubernetes


def kustomize(path: Path) -> list[dict[str, Any]]:
    if exe := shutil.which("kustomize"):
        cmd = [exe, "build", str(path)]
    elif exe := shutil.which("kubectl"):
        cmd = [exe, "kustomize", str(path)]
    else:
        if os.environ.get("CI"):
            pytest.fail("neither kustomize nor kubectl is installed: install kubectl (it includes kustomize)")
        pytest.skip("neither kustomize nor kubectl is installed")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(kustomize(K8S / overlay))


BUILDS = ["base", "overlays/dev", "overlays/prod"]


def of(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.mark.parametrize("build", BUILDS)
def test_every_rendered_object_is_valid_kubernetes(build: str) -> None:
    docs = rendered(build)
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}
    version = "1.33"
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)
    # and the validator is not a rubber stamp: a misspelt field and a wrong type are refused
    deployment = json.loads(json.dumps(of(docs, "Deployment")["tokenpulse-scoring"]))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, version, strict=True)
    deployment = json.loads(json.dumps(of(docs, "Deployment")["tokenpulse-scoring"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, version, strict=True)


@pytest.mark.parametrize("build", BUILDS)
def test_every_deployment_has_probes_resources_and_a_disruption_budget(build: str) -> None:
    docs = rendered(build)
    deployments = of(docs, "Deployment")
    pdbs = of(docs, "PodDisruptionBudget")
    assert {f"tokenpulse-{s}" for s in TOKENPULSE} <= set(deployments)
    for name, d in deployments.items():
        pod = d["spec"]["template"]
        for c in pod["spec"]["containers"]:
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                assert "memory" in res.get(part, {}), f"{name}/{c['name']}: no memory {part}"
            assert "cpu" in res["requests"], f"{name}/{c['name']}: no cpu request"
            assert c.get("readinessProbe") and c.get("livenessProbe"), f"{name}/{c['name']}: probes"
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
        if name.removeprefix("tokenpulse-") not in TOKENPULSE:
            continue
        (c,) = pod["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            http = c[probe]["httpGet"]
            assert http["port"] in ports and http["path"] == ("/readyz" if probe == "readinessProbe" else "/healthz")
        ann = pod["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) in ports.values()
        labels = pod["metadata"]["labels"]
        matching = [p for p in pdbs.values() if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(matching) == 1, f"{name}: {len(matching)} PodDisruptionBudgets"
        assert "maxUnavailable" in matching[0]["spec"]  # a single-replica service can still be drained
        # SIGTERM: the batch in hand finishes before the kubelet kills the pod
        grace = pod["spec"]["terminationGracePeriodSeconds"]
        settings = next(iter(of(docs, "ConfigMap").values()))["data"]
        assert float(settings["TOKENPULSE_SHUTDOWN_GRACE_S"]) < grace


@pytest.mark.parametrize("build", BUILDS)
def test_ingest_runs_two_replicas_that_may_overlap_in_a_rollout(build: str) -> None:
    """Ingest's state and feeds are owned per partition (docs/design/0003): two replicas share them, and a
    rolling update (one replica moving its share to the other) is safe, so no Recreate outage."""
    ingest = of(rendered(build), "Deployment")["tokenpulse-ingest"]["spec"]
    assert ingest["replicas"] == 2
    assert ingest["strategy"]["type"] == "RollingUpdate"


def test_compose_can_scale_ingest() -> None:
    """`docker compose up --scale ingest=2`: no fixed container name or host port for two replicas to share."""
    ingest = compose()["services"]["ingest"]
    assert "container_name" not in ingest and "ports" not in ingest


@pytest.mark.parametrize("build", BUILDS)
def test_autoscalers_scoring_on_consumer_lag_and_gateway_on_cpu(build: str) -> None:
    docs = rendered(build)
    hpas = of(docs, "HorizontalPodAutoscaler")
    settings = next(iter(of(docs, "ConfigMap").values()))["data"]
    scoring, gateway = hpas["tokenpulse-scoring"], hpas["tokenpulse-gateway"]
    assert scoring["spec"]["scaleTargetRef"]["name"] == "tokenpulse-scoring"
    (metric,) = scoring["spec"]["metrics"]
    assert metric["type"] == "External" and metric["external"]["metric"]["name"] == "kafka_consumergroup_lag"
    selector = metric["external"]["metric"]["selector"]["matchLabels"]
    assert selector["consumergroup"] == f"{settings['TOKENPULSE_CONSUMER_GROUP_PREFIX']}-scoring"
    assert selector["topic"] == "tokenpulse.candles.v1"
    # more scoring replicas than partitions would idle: the topic's partitions bound the autoscaler
    partitions = int(settings.get("TOKENPULSE_KAFKA_PARTITIONS", Settings().bus.kafka_partitions))
    assert 1 <= scoring["spec"]["minReplicas"] <= scoring["spec"]["maxReplicas"] <= partitions
    assert gateway["spec"]["scaleTargetRef"]["name"] == "tokenpulse-gateway"
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in gateway["spec"]["metrics"])
    deployments = of(docs, "Deployment")
    assert "replicas" not in deployments["tokenpulse-scoring"]["spec"]  # the autoscaler owns it
    assert "replicas" not in deployments["tokenpulse-gateway"]["spec"]


@pytest.mark.parametrize("build", BUILDS)
def test_kubernetes_sets_only_real_settings_and_what_production_needs(build: str) -> None:
    docs = rendered(build)
    (config,) = of(docs, "ConfigMap").values()
    data = config["data"]
    assert not {k for k in data if k.startswith("TOKENPULSE_")} - KNOWN
    assert set(data) >= OPS
    for svc in TOKENPULSE:
        pod = of(docs, "Deployment")[f"tokenpulse-{svc}"]["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        assert c["args"] == ["run", svc]
        assert [e["configMapRef"]["name"] for e in c["envFrom"]] == [config["metadata"]["name"]]
        env = {e["name"]: e for e in c.get("env", [])}
        assert not {k for k in env if k.startswith("TOKENPULSE_")} - KNOWN
        assert REQUIRED[svc] <= set(env) | set(data), f"{svc} lacks {REQUIRED[svc] - set(env) - set(data)}"
        for name in ("TOKENPULSE_ADMIN_TOKEN", "TOKENPULSE_ALERTS_SIGNING_KEY", "TOKENPULSE_CLICKHOUSE_URL"):
            if name in env:  # secrets come from the Secret, never from a literal or the ConfigMap
                assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "tokenpulse-secrets"
                assert name not in data
        if svc != "gateway":
            assert int(data["TOKENPULSE_METRICS_PORT"]) == c["ports"][0]["containerPort"]
