"""The operator's entry points: settings refusal, epilot_check, seeding, the demo login, the admin banner."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from integrations.epilot_sandbox import SandboxApp

ROOT = Path(__file__).resolve().parent.parent


def _import_production_settings(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("EPILOT_", "SECRET_KEY", "DJANGO_"))}
    return subprocess.run([sys.executable, "-c", "import config.settings.production"], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=60)


def test_production_refuses_to_start_without_secret_key() -> None:
    result = _import_production_settings(EPILOT_API_TOKEN="x")
    assert result.returncode != 0 and "SECRET_KEY" in result.stderr


def test_production_refuses_to_start_without_token_or_sandbox_url() -> None:
    result = _import_production_settings(SECRET_KEY="s" * 50)
    assert result.returncode != 0 and "EPILOT_API_TOKEN" in result.stderr
    assert _import_production_settings(SECRET_KEY="s" * 50, EPILOT_API_URL="http://127.0.0.1:8765").returncode == 0


def test_epilot_check_passes_on_the_embedded_sandbox(capsys) -> None:
    call_command("epilot_check")
    out = capsys.readouterr().out
    assert "Embedded epilot sandbox" in out
    assert out.count("ok  ") == 4 and "2 workflow definitions" in out


def test_epilot_check_fails_clearly_on_a_wrong_token(settings, sandbox_store, capsys) -> None:
    import threading

    from integrations.epilot_sandbox import make_sandbox_server

    server = make_sandbox_server(SandboxApp(sandbox_store, token="the-right-one"), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings.EPILOT_API_TOKEN = "a-wrong-secret-token"
        origin = f"http://127.0.0.1:{server.server_address[1]}"
        for name in ("EPILOT_ENTITY_API_URL", "EPILOT_WORKFLOWS_EXECUTION_API_URL", "EPILOT_WORKFLOWS_DEFINITION_API_URL",
                     "EPILOT_AUTOMATION_API_URL"):
            setattr(settings, name, origin)
        with pytest.raises(CommandError) as caught:
            call_command("epilot_check")
    finally:
        server.shutdown()
        server.server_close()
    out = capsys.readouterr().out
    assert "FAIL" in out and "EPILOT_API_TOKEN" in str(caught.value)
    assert "a-wrong-secret-token" not in out + str(caught.value)


def test_seed_sandbox_builds_a_deterministic_data_set(tmp_path, capsys) -> None:
    db = tmp_path / "bench.sqlite3"
    call_command("seed_sandbox", db=str(db), contacts=30, opportunities=20, orders=10)
    call_command("seed_sandbox", db=str(db), contacts=30, opportunities=20, orders=10)
    assert "holds 78 entities" in capsys.readouterr().out  # 18 demo + 60 generated, the same ids both times


@pytest.mark.django_db
def test_demo_login_can_use_the_admin(client, capsys) -> None:
    call_command("create_demo_user")
    assert "wuelfrath-demo" in capsys.readouterr().out
    assert get_user_model().objects.get(username="demo").is_superuser
    assert client.login(username="demo", password="wuelfrath-demo")
    page = client.get("/admin/")
    assert page.status_code == 200
    assert "Embedded epilot sandbox" in page.content.decode()
