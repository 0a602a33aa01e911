"""Production settings: refuse to start on a missing secret or an unconfigured epilot."""
from django.core.exceptions import ImproperlyConfigured

from config.settings.base import *  # noqa: F403
from config.settings.base import EPILOT_API_TOKEN, EPILOT_API_URL, env

DEBUG = False
SECRET_KEY = env("SECRET_KEY")  # no default: a missing key stops the boot
if len(SECRET_KEY) < 50:
    raise ImproperlyConfigured("SECRET_KEY must be at least 50 characters long (e.g. python -c 'import secrets; "
                               "print(secrets.token_urlsafe(50))').")
if not (EPILOT_API_TOKEN or EPILOT_API_URL):
    raise ImproperlyConfigured(
        "Set EPILOT_API_TOKEN to talk to epilot, or EPILOT_API_URL to use an explicit sandbox; "
        "production never falls back to the embedded sandbox."
    )

# API throttling counts per client in the cache: it must be shared by every web process, or each
# process would allow the full rate. Default: the Redis the Celery broker uses.
if not env("CACHE_URL", default="") and CELERY_BROKER_URL.startswith(("redis://", "rediss://")):  # noqa: F405
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CELERY_BROKER_URL,  # noqa: F405
                          "KEY_PREFIX": "ausbau-cache"}}
if CACHES["default"]["BACKEND"] in ("django.core.cache.backends.locmem.LocMemCache",
                                    "django.core.cache.backends.dummy.DummyCache"):
    raise ImproperlyConfigured(
        "Production needs a cache shared by every web process for API throttling: set CACHE_URL (redis://...), "
        "or use a Redis CELERY_BROKER_URL, which is then used as the cache too."
    )

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
# Never redirected: a webhook sender has sent its (signed) body already and treats a 301 as a failed
# delivery; load balancers probe health over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^webhooks/epilot/$", r"^health(/|$)"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
LANGUAGE_COOKIE_SECURE = True
# A session ends after this long without a request (each request renews it), not after Django's two weeks.
SESSION_COOKIE_AGE = env.int("SESSION_IDLE_HOURS", default=8) * 3600
SESSION_SAVE_EVERY_REQUEST = True
# Once on, HSTS is meant to last: at least a year (browsers and scanners treat shorter as not enabled); 0 turns it off.
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=365 * 24 * 3600)
if 0 < SECURE_HSTS_SECONDS < 365 * 24 * 3600:
    raise ImproperlyConfigured("SECURE_HSTS_SECONDS must be 0 (off) or at least 31536000 (a year).")
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
if not SECURE_HSTS_PRELOAD:
    # Preloading HSTS commits the whole domain to HTTPS in browsers for good; that is the municipal
    # IT's decision (SECURE_HSTS_PRELOAD=true), not a default of this application.
    SILENCED_SYSTEM_CHECKS = ["security.W021"]
SECURE_CONTENT_TYPE_NOSNIFF = True
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
CONN_HEALTH_CHECKS = True
EPILOT_WEBHOOK_REQUIRE_HTTPS = True
