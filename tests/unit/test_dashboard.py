"""docker/: the Grafana dashboard asks only for metrics the processes serve, and
Prometheus scrapes the ports they serve them on."""

import json
import re
from pathlib import Path

import yaml

from streams import metrics

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def served_names() -> set[str]:
    # Families by the names Prometheus sees (labelled ones have no samples yet), and
    # the worker's gauges made at each scrape.
    names = set()
    for registry in (metrics.WORKER, metrics.INGEST, metrics.CONNECTOR):
        for family in registry.collect():
            names.add(family.name + ("_total" if family.type == "counter" else ""))
            if family.type == "histogram":
                names |= {family.name + suffix for suffix in ("_bucket", "_count", "_sum")}
    worker = (Path(metrics.__file__).with_name("worker.py")).read_text()
    names |= set(re.findall(r'GaugeMetricFamily\("(smscool_[a-z_]+)"', worker))
    return names


def test_every_metric_the_dashboard_asks_for_is_served():
    dashboard = json.loads((DOCKER / "grafana/dashboards/sms-cooldown.json").read_text())
    asked = set(re.findall(r"smscool_[a-z_]+", json.dumps(
        [target["expr"] for panel in dashboard["panels"]
         for target in panel.get("targets", [])])))
    assert asked, "the dashboard asks for no smscool metric"
    assert asked <= served_names(), asked - served_names()


def test_prometheus_scrapes_the_ports_the_processes_serve_on():
    config = yaml.safe_load((DOCKER / "prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["smscool-worker"]["dns_sd_configs"][0]["port"] == metrics.WORKER_PORT
    assert jobs["smscool-connector"]["static_configs"][0]["targets"] == [
        f"connector:{metrics.CONNECTOR_PORT}"]
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    for service, port in (("worker", metrics.WORKER_PORT), ("connector", metrics.CONNECTOR_PORT)):
        env = compose["services"][service]["environment"]
        assert (env["SMSCOOL_METRICS_HOST"], int(env["SMSCOOL_METRICS_PORT"])) == ("0.0.0.0", port)
