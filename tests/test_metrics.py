"""The Prometheus endpoint: the metrics an operator scrapes, and who may scrape them."""
from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db

EXPECTED = ("ausbau_http_requests_total", "ausbau_http_request_duration_seconds", "ausbau_epilot_calls_total",
            "ausbau_epilot_call_duration_seconds", "ausbau_sync_runs_total", "ausbau_sync_entities_total",
            "ausbau_sync_run_duration_seconds", "ausbau_mirror_lag_seconds", "ausbau_waiting_work", "ausbau_jobs",
            "ausbau_quarantined_entities", "ausbau_queue_depth", "ausbau_webhook_events_total",
            "ausbau_webhook_change_to_mirror_seconds", "ausbau_epilot_retries_total", "ausbau_epilot_rate_limited_total",
            "ausbau_epilot_write_budget_wait_seconds")


def samples(text: str) -> dict[str, float]:
    """`name{labels}` → value of every sample line."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def test_a_scrape_from_loopback_shows_the_installations_metrics(client, settings) -> None:
    settings.CELERY_BROKER_URL = "memory://"
    call_command("sync_epilot", stdout=StringIO())
    client.get("/health/live")
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer["Content-Type"].startswith("text/plain")
    text = answer.content.decode()
    assert [name for name in EXPECTED if f"# TYPE {name} " not in text] == []
    assert "_created " not in text  # no creation-time series beside every counter
    values = samples(text)
    assert values['ausbau_http_requests_total{method="GET",status="200",view="health-live"}'] >= 1
    assert values['ausbau_sync_runs_total{kind="incremental",outcome="succeeded",schema="opportunity"}'] >= 1
    assert values['ausbau_epilot_calls_total{operation="searchEntities",service="entity",status="200"}'] >= 3
    assert 0 <= values['ausbau_mirror_lag_seconds{schema="opportunity"}'] < 60
    assert values['ausbau_jobs{kind="step_job",state="queued"}'] == 0
    assert values["ausbau_quarantined_entities"] == 0


@pytest.mark.parametrize(("remote", "token", "sent", "status"), [
    ("10.20.30.40", "", "", 403),                                   # not loopback, no token configured
    ("10.20.30.40", "scrape-secret", "Bearer scrape-secret", 200),  # the token opens it from anywhere
    ("10.20.30.40", "scrape-secret", "Bearer guessed", 403),
    ("10.20.30.40", "scrape-secret", "", 403),
    ("::1", "", "", 200),
])
def test_metrics_are_for_the_token_or_the_allowed_networks(client, settings, remote, token, sent, status) -> None:
    settings.CELERY_BROKER_URL = "memory://"
    settings.METRICS_TOKEN = token
    headers = {"HTTP_AUTHORIZATION": sent} if sent else {}
    assert client.get("/metrics", REMOTE_ADDR=remote, **headers).status_code == status


def test_allowed_networks_are_configurable(client, settings) -> None:
    settings.CELERY_BROKER_URL = "memory://"
    settings.METRICS_ALLOWED_NETWORKS = ["10.20.0.0/16"]
    assert client.get("/metrics", REMOTE_ADDR="10.20.30.40").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403


def _sentry_state(**env: str) -> str:
    import os
    import subprocess
    import sys
    from pathlib import Path

    probe = ("import django; django.setup(); import sentry_sdk; from config.sentry import scrub_texts; "
             "event = {'message': 'bad signature whsec_abc123= for Bearer xyz'}; "
             "print(sentry_sdk.get_client().is_active(), scrub_texts(event, {})['message'])")
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("SENTRY_", "DJANGO_"))}
    result = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                            text=True, timeout=60, env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings.local",
                                                        "LOG_LEVEL": "ERROR", **env})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_sentry_is_off_without_a_dsn_and_scrubs_secrets_with_one() -> None:
    assert _sentry_state().startswith("False ")
    # A DSN on a closed loopback port: the SDK is on, and nothing is sent anywhere by starting it.
    assert _sentry_state(SENTRY_DSN="http://public@127.0.0.1:9/1") == "True bad signature [Filtered] for [Filtered]"


def test_the_grafana_dashboard_queries_only_metrics_the_endpoint_exposes() -> None:
    import json
    import re
    from pathlib import Path

    dashboard = json.loads((Path(__file__).resolve().parents[1] / "docs" / "grafana-dashboard.json").read_text())
    queried = {re.sub(r"_(bucket|sum|count)$", "", name) for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"ausbau_[a-z_]+", target["expr"])}
    assert queried and queried <= set(EXPECTED)


def test_text_log_lines_carry_the_request_id_too(client, capsys) -> None:
    import logging

    from config.logging import ContextFilter, TextFormatter

    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    handler.setFormatter(TextFormatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("ausbau.request")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        client.get("/health/live", HTTP_X_REQUEST_ID="abc-123")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert "INFO ausbau.request [request=abc-123] GET /health/live 200" in capsys.readouterr().err
