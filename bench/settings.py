"""Settings for the API benchmark: production-like (DEBUG off), plus the floor views of bench/floor_urls.py."""
from config.settings.local import *  # noqa: F403

DEBUG = False
ROOT_URLCONF = "bench.floor_urls"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
STORAGES = {"staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
            "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"}}
