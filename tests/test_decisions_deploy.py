"""The decision database in the deployment files: the production overlay mounts the URL from a
Secret and lets the pods reach PostgreSQL; compose runs one PostgreSQL for every replica; the
image's own default is a writable path under its read-only root."""
from __future__ import annotations

from pathlib import Path

import yaml

from test_deploy_k8s import OVERLAY, by_kind, kubectl_render, python_render

ROOT = Path(__file__).resolve().parent.parent


def test_the_overlay_reads_the_database_url_from_a_mounted_secret():
    docs = kubectl_render(OVERLAY) or python_render(OVERLAY)
    pod = by_kind(docs, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {item["name"]: item for item in container["env"]}
    assert env["DATABASE_URL_FILE"]["value"] == "/run/secrets/ad-purchase-db/url"
    assert env["DECISION_LOG"]["value"] == "required"
    assert not any("valueFrom" in item for item in container["env"]), "the Secret must not be in the environment"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "database-url")
    assert mount["mountPath"] == "/run/secrets/ad-purchase-db" and mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == "database-url")
    assert volume["secret"]["secretName"] == "ad-purchase-db"
    assert volume["secret"]["items"] == [{"key": "url", "path": "url"}]
    egress = by_kind(docs, "NetworkPolicy")["spec"]["egress"]
    ports = {(p["protocol"], p["port"]) for rule in egress for p in rule["ports"]}
    assert {("TCP", 5432), ("UDP", 53), ("TCP", 53)} <= ports


def test_compose_gives_every_replica_one_postgresql():
    compose = yaml.safe_load((ROOT / "deploy" / "compose" / "compose.yaml").read_text())
    api, postgres = compose["services"]["api"], compose["services"]["postgres"]
    assert api["environment"]["DATABASE_URL"].startswith("postgresql://ad_purchase:")
    assert api["environment"]["DATABASE_URL"].endswith("@postgres:5432/ad_purchase")
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "ports" not in postgres, "the database is reached by the replicas only"
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert postgres["volumes"] == ["decisions-db:/var/lib/postgresql/data"] and "decisions-db" in compose["volumes"]


def test_the_image_keeps_its_default_database_in_the_writable_tmp():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "DATABASE_URL=sqlite:////tmp/decisions.sqlite3" in dockerfile
