"""Settings for the test suite: fast hashing, no broker, epilot only through the sandbox."""
from config.settings.base import *  # noqa: F403
from config.settings.base import env

SECRET_KEY = "test-only-key"
DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CELERY_BROKER_URL = "memory://"
CELERY_BROKER_TRANSPORT_OPTIONS = {}
# Tests never talk to a configured epilot: each test gets a fresh embedded sandbox.
EPILOT_API_TOKEN = ""
EPILOT_API_URL = ""
EPILOT_WRITES_PER_MINUTE = 100_000
EPILOT_WRITE_BUDGET_URL = "process://"  # each test's client counts on its own; tests/integrations test the shared ones
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
LOGGING["root"]["level"] = env("LOG_LEVEL", default="WARNING")  # noqa: F405
WHITENOISE_AUTOREFRESH = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not the shared in-memory database: concurrent tests then wait for SQLite's lock
    # (timeout in base settings) as the product does, instead of failing with "table is locked".
    VAR_DIR.mkdir(parents=True, exist_ok=True)  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}  # noqa: F405
# Threads of the live server and concurrency tests must not keep connections past their request.
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
