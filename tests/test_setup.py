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


def _clean_env(**env: str) -> dict[str, str]:
    names = ("EPILOT_", "SECRET_KEY", "DJANGO_", "CACHE_URL", "CELERY_BROKER_URL", "DATABASE_URL", "DEBUG")
    return {**{key: value for key, value in os.environ.items() if not key.startswith(names)}, **env}


def _import_production_settings(**env: str) -> subprocess.CompletedProcess[str]:
    env.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    return subprocess.run([sys.executable, "-c", "import config.settings.production"], cwd=ROOT, env=_clean_env(**env),
                          capture_output=True, text=True, timeout=60)


PRODUCTION = {"SECRET_KEY": "s" * 50, "EPILOT_API_URL": "http://127.0.0.1:8765", "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0"}
SHOW_SETTINGS = (
    "from django.conf import settings; "
    "print(settings.SETTINGS_MODULE, settings.DEBUG, settings.EPILOT_API_URL, settings.CACHES['default']['BACKEND'])"
)


@pytest.mark.parametrize("entry_point", ["config.wsgi", "config.asgi"])
def test_web_entry_points_load_production_settings_when_none_is_named(entry_point: str) -> None:
    result = subprocess.run([sys.executable, "-c", f"import {entry_point}; {SHOW_SETTINGS}"], cwd=ROOT,
                            env=_clean_env(**PRODUCTION), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["config.settings.production", "False", "http://127.0.0.1:8765",
                                     "django.core.cache.backends.redis.RedisCache"]


@pytest.mark.parametrize("entry_point", ["config.wsgi", "config.asgi"])
def test_web_entry_points_refuse_to_start_unconfigured_rather_than_fall_back_to_local(entry_point: str) -> None:
    result = subprocess.run([sys.executable, "-c", f"import {entry_point}"], cwd=ROOT, env=_clean_env(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0 and "ImproperlyConfigured" in result.stderr


def test_a_celery_process_without_named_settings_refuses_to_start() -> None:
    result = subprocess.run([sys.executable, "-c", "from config.celery import app; print(app.conf.broker_url)"], cwd=ROOT,
                            env=_clean_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DJANGO_SETTINGS_MODULE" in result.stderr


def test_manage_py_keeps_local_settings() -> None:
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", SHOW_SETTINGS], cwd=ROOT, env=_clean_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].split()[:2] == ["config.settings.local", "True"]


def test_a_new_sqlite_file_gets_wal_pages_that_hold_several_documents_and_a_larger_cache(tmp_path) -> None:
    show = ("from django.db import connection; cursor = connection.cursor(); "
            "print(*(cursor.execute(f'PRAGMA {name}').fetchone()[0] "
            "for name in ('page_size', 'journal_mode', 'synchronous', 'cache_size')))")
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", show], cwd=ROOT, capture_output=True, text=True,
                            env=_clean_env(DATABASE_URL=f"sqlite:///{tmp_path / 'new.sqlite3'}"), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].split() == ["16384", "wal", "1", "-16384"]  # synchronous=NORMAL, 16 MB


def test_production_refuses_a_cache_of_its_own_per_process() -> None:
    result = _import_production_settings(**{**PRODUCTION, "CELERY_BROKER_URL": "filesystem://"})
    assert result.returncode != 0 and "CACHE_URL" in result.stderr
    result = _import_production_settings(**{**PRODUCTION, "CACHE_URL": "locmemcache://"})
    assert result.returncode != 0 and "CACHE_URL" in result.stderr
    assert _import_production_settings(**{**PRODUCTION, "CELERY_BROKER_URL": "filesystem://",
                                          "CACHE_URL": "redis://127.0.0.1:6379/1"}).returncode == 0


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
    logged_in = client.post("/admin/login/?next=/admin/", {"username": "demo", "password": "wuelfrath-demo"})
    assert logged_in.status_code == 302
    page = client.get("/admin/")
    assert page.status_code == 200
    assert "Eingebettete epilot-Sandbox" in page.content.decode()  # German is the default


def test_production_redirects_to_https_but_not_webhook_deliveries_or_health_probes() -> None:
    """A sender has posted its signed body already when a 301 comes back, and counts it as a failed delivery."""
    check = ("import django; django.setup(); "
             "from django.middleware.security import SecurityMiddleware; from django.test import RequestFactory; "
             "m = SecurityMiddleware(lambda r: None); f = RequestFactory(); "
             "print([getattr(m.process_request(f.generic(method, path)), 'status_code', None) for method, path in "
             "[('POST', '/webhooks/epilot/'), ('GET', '/health/'), ('GET', '/health/live'), ('GET', '/health/ready/'), "
             "('GET', '/admin/')]])")
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, env=_clean_env(
        **PRODUCTION, DJANGO_SETTINGS_MODULE="config.settings.production", ALLOWED_HOSTS="testserver"), capture_output=True,
        text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[None, None, None, None, 301]"


def test_live_and_long_work_run_on_queues_of_their_own_that_a_plain_worker_consumes_both() -> None:
    """A sync never waits in front of a webhook; `celery -A config worker` without -Q still takes both queues."""
    from config.celery import app

    def queue_of(task: str) -> str:
        return app.amqp.router.route({}, task)["queue"].name

    assert set(app.amqp.queues) == {"live", "bulk"}  # the queues a worker without -Q consumes
    assert {queue_of(task) for task in ("projects.webhook_event", "projects.outbox_sweep", "projects.step_job",
                                        "projects.workflow_start_job")} == {"live"}
    assert {queue_of(task) for task in ("projects.sync_epilot", "projects.webhook_reconcile", "projects.task_digest")} == {
        "bulk"}
    procfile = (Path(__file__).resolve().parent.parent / "Procfile").read_text()
    assert "-Q live" in procfile and "-Q bulk" in procfile


def test_production_installs_what_it_runs_and_the_release_collects_static_files() -> None:
    root = Path(__file__).resolve().parent.parent
    production = {line.split("==")[0].split("[")[0].lower() for line in (root / "requirements.txt").read_text().splitlines()
                  if "==" in line}
    assert production & {"pytest", "pytest-django", "playwright", "schemathesis", "hypothesis", "ruff", "respx"} == set()
    assert "-r requirements.txt" in (root / "requirements-dev.txt").read_text()
    release = next(line for line in (root / "Procfile").read_text().splitlines() if line.startswith("release:"))
    assert "migrate" in release and "collectstatic --noinput" in release


def test_after_collectstatic_production_serves_the_login_page(tmp_path) -> None:
    """Without the manifest of collected files, every admin page under production settings is a 500."""
    env = _clean_env(**PRODUCTION, DJANGO_SETTINGS_MODULE="config.settings.production", ALLOWED_HOSTS="testserver",
                     STATIC_ROOT=str(tmp_path / "static"), SECURE_SSL_REDIRECT="false", LOG_LEVEL="ERROR",
                     DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    collected = subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput"], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=300)
    assert collected.returncode == 0, collected.stderr
    probe = ("import django; django.setup(); from django.core.management import call_command; "
             "call_command('migrate', verbosity=0); from django.test import Client; "
             "print(Client().get('/admin/login/').status_code)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "200"


def test_a_fresh_var_dir_gets_the_filesystem_brokers_folders_and_a_task_can_be_queued(tmp_path) -> None:
    probe = ("import django; django.setup(); from projects.tasks import task_digest_task; "
             "print(task_digest_task.delay().id is not None)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env=_clean_env(DJANGO_SETTINGS_MODULE="config.settings.local", VAR_DIR=str(tmp_path / "var"),
                                           CELERY_BROKER_URL="filesystem://", LOG_LEVEL="ERROR"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "True"
    assert len(list((tmp_path / "var" / "celery" / "broker").iterdir())) == 1


def test_production_refuses_a_short_secret_key_and_a_short_hsts() -> None:
    short = _import_production_settings(**{**PRODUCTION, "SECRET_KEY": "s" * 49})
    assert short.returncode != 0 and "at least 50 characters" in short.stderr
    brief = _import_production_settings(**{**PRODUCTION, "SECURE_HSTS_SECONDS": "3600"})
    assert brief.returncode != 0 and "SECURE_HSTS_SECONDS" in brief.stderr
    assert _import_production_settings(**{**PRODUCTION, "SECURE_HSTS_SECONDS": "0"}).returncode == 0


def test_production_sessions_end_after_eight_idle_hours_and_every_cookie_is_secure() -> None:
    check = ("import django; django.setup(); from django.conf import settings as s; "
             "print(s.SESSION_COOKIE_AGE, s.SESSION_SAVE_EVERY_REQUEST, s.LANGUAGE_COOKIE_SECURE, s.SESSION_COOKIE_SECURE, "
             "s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS)")
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, env=_clean_env(
        **PRODUCTION, DJANGO_SETTINGS_MODULE="config.settings.production"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-6:] == ["28800", "True", "True", "True", "True", "31536000"]


def test_the_demo_login_is_never_created_under_production_settings(tmp_path) -> None:
    result = subprocess.run([sys.executable, "manage.py", "create_demo_user"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env=_clean_env(**PRODUCTION, DJANGO_SETTINGS_MODULE="config.settings.production",
                                                        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}"))
    assert result.returncode != 0 and "never created under production settings" in result.stderr
