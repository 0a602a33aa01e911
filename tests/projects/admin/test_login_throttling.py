"""Login throttling (django-axes): wrong passwords lock a username and an address; an admin unlocks them."""
from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/?next=/admin/"


def log_in(username: str, password: str, address: str) -> int:
    """The login page's answer: 302 logged in, 200 refused (wrong password), 429 locked out."""
    return Client(REMOTE_ADDR=address).post(LOGIN, {"username": username, "password": password}).status_code


@pytest.fixture
def anna() -> User:
    return User.objects.create_user("anna", password="richtig-und-lang-2026", is_staff=True)


def test_wrong_passwords_from_many_addresses_lock_the_username_until_an_admin_unlocks_it(anna, settings) -> None:
    settings.AXES_FAILURE_LIMIT = 5
    assert [log_in("anna", f"falsch-{n}", f"10.0.0.{n}") for n in range(5)] == [200] * 4 + [429]  # the fifth locks
    assert log_in("anna", "richtig-und-lang-2026", "10.0.1.1") == 429  # the right password no longer helps
    assert log_in("anna", "richtig-und-lang-2026", "10.0.1.2") == 429

    call_command("axes_reset_username", "anna", stdout=StringIO())
    assert log_in("anna", "richtig-und-lang-2026", "10.0.1.1") == 302


def test_wrong_passwords_from_one_address_lock_that_address_only(anna, settings) -> None:
    settings.AXES_FAILURE_LIMIT = 5
    User.objects.create_user("bob", password="bobs-passwort-ist-lang", is_staff=True)
    assert [log_in(f"rate-{n}", "geraten", "203.0.113.7") for n in range(5)] == [200] * 4 + [429]
    assert log_in("bob", "bobs-passwort-ist-lang", "203.0.113.7") == 429
    assert log_in("bob", "bobs-passwort-ist-lang", "198.51.100.2") == 302
    call_command("axes_reset_ip", "203.0.113.7", stdout=StringIO())
    assert log_in("anna", "richtig-und-lang-2026", "203.0.113.7") == 302


def test_a_successful_login_resets_the_count(anna, settings) -> None:
    settings.AXES_FAILURE_LIMIT = 3
    assert [log_in("anna", "falsch", "10.0.0.1") for _ in range(2)] == [200, 200]
    assert log_in("anna", "richtig-und-lang-2026", "10.0.0.1") == 302
    assert [log_in("anna", "falsch", "10.0.0.1") for _ in range(2)] == [200, 200]
    assert log_in("anna", "richtig-und-lang-2026", "10.0.0.1") == 302
