"""Production settings: refuse to start on a missing secret or an unconfigured epilot."""
from django.core.exceptions import ImproperlyConfigured

from config.settings.base import *  # noqa: F403
from config.settings.base import EPILOT_API_TOKEN, EPILOT_API_URL, env

DEBUG = False
SECRET_KEY = env("SECRET_KEY")  # no default: a missing key stops the boot
if not (EPILOT_API_TOKEN or EPILOT_API_URL):
    raise ImproperlyConfigured(
        "Set EPILOT_API_TOKEN to talk to epilot, or EPILOT_API_URL to use an explicit sandbox; "
        "production never falls back to the embedded sandbox."
    )

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
if not SECURE_HSTS_PRELOAD:
    # Preloading HSTS commits the whole domain to HTTPS in browsers for good; that is the municipal
    # IT's decision (SECURE_HSTS_PRELOAD=true), not a default of this application.
    SILENCED_SYSTEM_CHECKS = ["security.W021"]
SECURE_CONTENT_TYPE_NOSNIFF = True
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
CONN_HEALTH_CHECKS = True
