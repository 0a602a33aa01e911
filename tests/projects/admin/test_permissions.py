"""A Viewer changes nothing anywhere: every admin action and every admin page, walked as a Viewer.

The walk is generic (every registered ModelAdmin, every action it declares, every URL the admin
serves), so an action or page added later without a permission fails here or in the system check.
"""
from __future__ import annotations

import re
from io import StringIO

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.core import checks
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from projects.services.api_clients import api_client_authenticate, api_client_create, api_client_revoke, api_client_rotate
from projects.services.errors import NotAllowed

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def mirror() -> None:
    call_command("sync_epilot", stdout=StringIO())


def staff(group: str) -> User:
    user = User.objects.create_user(f"{group.lower()}-user", password="pw-123456", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return user


def snapshot() -> dict[str, object]:
    """Every row of every model, as values: any change a request makes shows as a difference."""
    state: dict[str, object] = {}
    for model in apps.get_models():
        if model._meta.label in ("sessions.Session", "admin.LogEntry"):
            continue
        state[model._meta.label] = sorted(map(repr, model.objects.values_list()))
    return state


def admin_urls() -> list[str]:
    """Every URL the admin site serves (logout aside), with a real primary key where the pattern takes one."""
    raw: list[str] = []

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                raw.append(prefix + str(pattern.pattern))

    walk(admin.site.get_urls(), "")
    urls = []
    for route in raw:
        path = route.replace("^", "").replace("$", "")
        path = re.sub(r"\(\?P<app_label>[^)]*\)", "projects", path)
        model_route = re.match(r"(\w+)/(\w+)/", path)
        pk = "1"
        if model_route:
            try:
                first = apps.get_model(model_route.group(1), model_route.group(2)).objects.order_by("pk").first()
                pk = str(first.pk) if first else "1"
            except LookupError:
                pass
        path = re.sub(r"<path:object_id>|<int:pk>", pk, path)
        path = re.sub(r"<[^>]+>", "1", path)
        if path != "logout/":
            urls.append("/admin/" + path)
    return urls


def test_the_system_check_finds_no_admin_action_without_a_permission() -> None:
    errors = [message for message in checks.run_checks(tags=[checks.Tags.admin]) if message.id == "projects.E001"]
    assert errors == []


def test_every_admin_action_is_refused_to_a_viewer(client) -> None:
    api_client_create(name="GIS", scopes=["read", "write"])
    client.force_login(staff("Viewer"))
    before = snapshot()
    tried = 0
    for model, model_admin in admin.site._registry.items():
        ids = list(model.objects.values_list("pk", flat=True)[:3])
        if not ids:
            continue
        changelist = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        for _func, name, _description in model_admin._get_base_actions():
            response = client.post(changelist, {"action": name, "_selected_action": ids, "post": "yes"})
            assert response.status_code < 500, f"{model._meta.label} {name}: {response.status_code}"
            tried += 1
    assert tried >= 10
    assert snapshot() == before


def test_every_admin_page_answers_a_viewer_without_changing_anything(client) -> None:
    client.force_login(staff("Viewer"))
    before = snapshot()
    statuses = {}
    for url in admin_urls():
        for method in ("get", "post"):
            response = getattr(client, method)(url, {"ids": "1,2", "definition": "1", "status": "abgebrochen",
                                                       "expected_updated_at": "2026-01-01T00:00:00Z", "name": "x"})
            statuses[(method, url)] = response.status_code
            assert response.status_code < 500, f"{method.upper()} {url}: {response.status_code}"
    assert snapshot() == before
    assert len(statuses) > 100


def test_api_clients_cannot_be_rotated_or_revoked_by_a_viewer(client) -> None:
    api_client, token = api_client_create(name="Planungstool", scopes=["read", "write"])
    client.force_login(staff("Viewer"))
    changelist = reverse("admin:projects_apiclient_changelist")
    for action in ("rotate_action", "revoke_action"):
        page = client.post(changelist, {"action": action, "_selected_action": [api_client.pk]}, follow=True)
        assert "abo_" not in page.content.decode()
    assert api_client_authenticate(token) is not None
    api_client.refresh_from_db()
    assert api_client.is_active


def test_a_revoked_client_is_not_reactivated_by_a_new_token(admin_client) -> None:
    api_client, _token = api_client_create(name="Alt", scopes=["read"])
    api_client_revoke(api_client)
    with pytest.raises(NotAllowed):
        api_client_rotate(api_client)
    page = admin_client.post(reverse("admin:projects_apiclient_changelist"),
                             {"action": "rotate_action", "_selected_action": [api_client.pk]}, follow=True)
    assert "widerrufen" in page.content.decode() and "abo_" not in page.content.decode()
    api_client.refresh_from_db()
    assert not api_client.is_active


def test_a_new_token_is_shown_once_and_never_travels_in_a_cookie(admin_client) -> None:
    response = admin_client.post(reverse("admin:projects_apiclient_add"), {"name": "Kundenportal", "scopes": ["read"],
                                                                           "throttle_rate": "600/min"})
    assert response.status_code == 302
    assert all("abo_" not in morsel.value for morsel in response.cookies.values())
    page = admin_client.get(response.url)
    token = page.content.decode().split("id='new-api-token'>")[1].split("<")[0]
    assert api_client_authenticate(token).name == "Kundenportal"
    assert "abo_" not in admin_client.get(response.url).content.decode()  # shown once


def test_periodic_tasks_run_only_for_staff_who_may_change_them_and_never_answer_500(client) -> None:
    task = PeriodicTask.objects.get(name="epilot sync (incremental)")
    changelist = reverse("admin:django_celery_beat_periodictask_changelist")
    client.force_login(staff("Viewer"))
    for action in ("run_tasks", "disable_tasks", "toggle_tasks"):
        response = client.post(changelist, {"action": action, "_selected_action": [task.pk]})
        assert response.status_code < 500
    task.refresh_from_db()
    assert task.enabled
    client.force_login(staff("Backoffice"))
    task.kwargs = "{not json"
    task.save()
    response = client.post(changelist, {"action": "run_tasks", "_selected_action": [task.pk]}, follow=True)
    assert response.status_code == 200 and "nicht eingeplant" in response.content.decode()


def roles_table() -> dict[str, tuple[set[str], set[str]]]:
    """docs/operations.md's table of roles: model → (Viewer's verbs, Backoffice's verbs)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[3] / "docs" / "operations.md").read_text()
    table = {}
    for model, viewer, backoffice in re.findall(r"^\s*\| [^|]+ \| `(\w+)` \| ([^|]+) \| ([^|]+) \|$", text, re.MULTILINE):
        def verbs(cell: str) -> set[str]:
            return {re.sub(r"\s*\(.*\)", "", verb).strip() for verb in cell.split(",") if verb.strip()}
        table[model] = (verbs(viewer), verbs(backoffice))
    return table


def codenames(model: str, verbs: set[str]) -> set[str]:
    return {f"{verb}_{model}" if verb in ("view", "add", "change", "delete") else verb for verb in verbs}


@pytest.mark.django_db
def test_the_groups_hold_exactly_what_the_documented_roles_say() -> None:
    table = roles_table()
    documented_models = set(table)
    registered = {model._meta.model_name for model in admin.site._registry
                  if model._meta.app_label in ("projects", "django_celery_beat")}
    assert registered <= documented_models, f"not in the roles table: {sorted(registered - documented_models)}"
    for column, group in ((0, "Viewer"), (1, "Backoffice")):
        expected = set().union(*(codenames(model, verbs[column]) for model, verbs in table.items()))
        held = set(Group.objects.get(name=group).permissions.values_list("codename", flat=True))
        assert held == expected, f"{group}: held but not documented {sorted(held - expected)}, " \
                                 f"documented but not held {sorted(expected - held)}"


@pytest.mark.django_db
def test_backoffice_opens_webhook_events_and_reprocesses_them(client) -> None:
    from projects.models import WebhookEvent

    event = WebhookEvent.objects.create(webhook_id="msg_x", schema="invoice", entity_epilot_id="x",
                                        received_at=timezone.now(), outcome=WebhookEvent.Outcome.FAILED)
    clerk = User.objects.create_user("clerk", password="pw-123456", is_staff=True)
    clerk.groups.add(Group.objects.get(name="Backoffice"))
    client.force_login(clerk)
    assert client.get(reverse("admin:projects_webhookevent_changelist")).status_code == 200
    client.post(reverse("admin:projects_webhookevent_changelist"), {"action": "reprocess", "_selected_action": [event.pk]})
    event.refresh_from_db()
    assert event.outcome == WebhookEvent.Outcome.PROCESSED and event.attempts == 1  # "schema invoice is not mirrored"
