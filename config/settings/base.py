"""Settings shared by every environment; everything that differs comes from the environment."""
from pathlib import Path

import xstatic.pkg.leaflet
from kombu import Exchange, Queue

from config.env import BASE_DIR, env
from config.sentry import init_sentry

# GENERAL
# https://docs.djangoproject.com/en/5.2/ref/settings/
DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env("SECRET_KEY", default="")
# Keys SECRET_KEY replaced: sessions, signatures and stored webhook secrets made with them still open (the secrets
# are sealed again with SECRET_KEY within a minute); remove them once that happened (docs/operations.md).
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
TIME_ZONE = "Europe/Berlin"
USE_TZ = True
LANGUAGE_CODE = "de"
LANGUAGES = [("de", "Deutsch"), ("en", "English")]
FORMAT_MODULE_PATH = ["config.formats"]  # shorter date-times than Django's, per language
USE_I18N = True
LOCALE_PATHS = [BASE_DIR / "locale"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
VAR_DIR = Path(env("VAR_DIR", default=str(BASE_DIR / "var")))

# DATABASES
# SQLite needs no set-up; production sets DATABASE_URL=postgres://...
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False  # services own their transactions; see docs/internals.md
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (web, worker, beat) share the file: wait for locks instead of failing. WAL lets them
    # read while the sync writes; synchronous=NORMAL syncs to disk at checkpoints, not at every commit
    # (a power cut may lose the last commits, never the file's consistency; the next sync fetches them again).
    # A new file gets 16 KiB pages: a mirrored document of 1-3 KB then shares its page with others instead of
    # filling one of 4 KiB nearly alone (an existing file keeps its page size; docs/internals.md says how to change it).
    # A page cache of 16 MB per connection (SQLite's default is 2 MB) holds the indexes a sync inserts into at
    # random (epilot ids are UUIDs). Figures: docs/benchmarks.md.
    DATABASES["default"].setdefault("OPTIONS", {}).update({
        "timeout": 20, "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA page_size=16384; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-16384;"})

# APPS
INSTALLED_APPS = [
    "projects.admin_site.BackofficeAdminConfig",  # django.contrib.admin with the grouped index
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "axes",
    "projects",
    "tools",
]

MIDDLEWARE = [
    "config.middleware.RequestIdMiddleware",
    "config.middleware.RejectNulMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: it answers for a locked-out login
]

# LOGIN THROTTLING (django-axes): after LOGIN_FAILURE_LIMIT wrong passwords for one username, or from one address,
# logins of that username or from that address are refused for LOGIN_LOCKOUT_MINUTES; a successful login resets the
# count. An admin unlocks at once: `manage.py axes_reset_username NAME`, `axes_reset_ip ADDRESS`, or by deleting
# the attempt under "Access attempts" in the admin. Behind a proxy the address is REMOTE_ADDR as the proxy passes it.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("LOGIN_LOCKOUT_MINUTES", default=30.0) / 60  # hours
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # either one locks
AXES_RESET_ON_SUCCESS = True
AXES_ENABLE_ACCESS_FAILURE_LOG = True

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "projects.context_processors.epilot_connection",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# MESSAGES
# In the session, not in a cookie: a new API token is shown once in a message and must not travel in a cookie.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

# STATIC
STATIC_URL = "static/"
STATIC_ROOT = Path(env("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
# Leaflet (pinned in requirements.txt) is served from our own static files, never from a CDN.
STATICFILES_DIRS = [("leaflet", xstatic.pkg.leaflet.BASE_DIR)]

# A contract signed after its area's pre-marketing deadline gets this attribute set to true on the order in epilot
# (e.g. to price a Baukostenzuschuss there).
LATE_SIGNUP_ATTRIBUTE = env("LATE_SIGNUP_ATTRIBUTE", default="late_signup")

# MAP of a rollout area: without a tile server the buildings are drawn on a plain background and the browser asks
# no other host. With one (e.g. https://tile.example.org/{z}/{x}/{y}.png) its tiles are shown under them.
MAP_TILE_URL = env("MAP_TILE_URL", default="")
MAP_TILE_ATTRIBUTION = env("MAP_TILE_ATTRIBUTION", default="")

# ERRORS: reported to Sentry only when SENTRY_DSN is set (no personal data, secrets scrubbed; config/sentry.py).
SENTRY_DSN = env("SENTRY_DSN", default="")
init_sentry(SENTRY_DSN, environment=env("SENTRY_ENVIRONMENT", default="production"),
            traces_sample_rate=env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0))

# Webhook receiver URLs must be https (loopback excepted); production always requires it.
EPILOT_WEBHOOK_REQUIRE_HTTPS = env.bool("EPILOT_WEBHOOK_REQUIRE_HTTPS", default=False)

# Address imports of rollout areas: larger files or more rows are refused with a reason (nothing is imported).
AREA_IMPORT_MAX_BYTES = env.int("AREA_IMPORT_MAX_BYTES", default=10 * 1024 * 1024)
AREA_IMPORT_MAX_ROWS = env.int("AREA_IMPORT_MAX_ROWS", default=50_000)

# METRICS (/metrics, Prometheus): a bearer token, or the networks allowed without one (loopback by default).
METRICS_TOKEN = env("METRICS_TOKEN", default="")
METRICS_ALLOWED_NETWORKS = env.list("METRICS_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"])

# LOGGING
# One line per event; the epilot gateway never logs its token or request bodies.
LOG_LEVEL = env("LOG_LEVEL", default="INFO")
LOG_FORMAT = env("LOG_FORMAT", default="text")  # "json" for one JSON object per line
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "config.logging.ContextFilter"}},
    "formatters": {"line": {"()": "config.logging.TextFormatter", "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s"},
                   "json": {"()": "config.logging.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["context"],
                             "formatter": "json" if LOG_FORMAT == "json" else "line"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}, "axes": {"level": "WARNING"}},
}

# REST FRAMEWORK
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "projects.api.schema.ApiAutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": ["projects.api.auth.ApiClientAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["projects.api.auth.HasScope"],
    "DEFAULT_THROTTLE_CLASSES": ["projects.api.auth.ApiClientRateThrottle"],
    "DEFAULT_PAGINATION_CLASS": "projects.api.pagination.StableCursorPagination",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "projects.api.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DATETIME_FORMAT": "iso-8601",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Ausbau Backoffice API",
    "DESCRIPTION": (
        "Status of the Glasfaser expansion projects of Stadtwerke Wülfrath, "
        "for GIS, planning, reporting and the customer site.\n\n"
        "Authenticate with `Authorization: Bearer <token>` of an API client (created in the admin; the token is shown once). "
        "Lists use cursor pagination: follow `next` until it is null. Times are ISO 8601 with time zone. "
        'Errors are `{"error": {"status", "code", "message", "fields"}}`; '
        "429 answers carry `Retry-After`. "
        "The status endpoint supports `ETag`/`If-None-Match` and `Last-Modified`/`If-Modified-Since`."
    ),
    "VERSION": "1.0.0",
    "ENUM_NAME_OVERRIDES": {"StageEnum": "projects.models.areas.Stage.values",
                            "MilestoneEnum": "projects.models.areas.Milestone.values"},
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "projects.api.schema.forbid_nul_in_parameters"],
}

# CACHE
# Throttling counts live here: locmem for one process, CACHE_URL=redis://... when several serve the API.
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}

# CELERY
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
# Locally the filesystem broker needs no server; production sets redis://.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "celery" / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "processed_folder": str(VAR_DIR / "celery" / "processed"),
        "control_folder": str(VAR_DIR / "celery" / "control"),  # kombu's default is ./control in the working directory
        "store_processed": False,
    }
    # The folders must exist before a process queues its first task (a fresh VAR_DIR has none).
    for _folder in ("broker", "processed", "control"):
        (VAR_DIR / "celery" / _folder).mkdir(parents=True, exist_ok=True)
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # An unacknowledged task (its worker died) is handed to another worker after this many seconds.
    # Sweep for such tasks every 10 s rather than kombu's default of about 100 s.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
                                       "unacked_restore_throttle": 1}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_TIME_LIMIT = 60 * 60
CELERY_TASK_SOFT_TIME_LIMIT = 55 * 60
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Live work (webhooks, the refresh after a write) and long work (syncs, bulk jobs, digests) on queues of their own,
# so a one-hour sync never delays a webhook. A worker started without -Q consumes every queue declared here.
CELERY_TASK_QUEUES = [Queue(name, Exchange(name), routing_key=name) for name in ("live", "bulk")]
CELERY_TASK_DEFAULT_QUEUE = "live"
CELERY_TASK_ROUTES = {
    # live: what someone waits for (a webhook's change, a step job or workflow start staff asked for)
    "projects.webhook_event": {"queue": "live"},
    "projects.outbox_sweep": {"queue": "live"},
    "projects.webhook_public_key_refresh": {"queue": "live"},
    "projects.step_job": {"queue": "live"},
    "projects.workflow_start_job": {"queue": "live"},
    # bulk: long or scheduled work that may wait behind itself
    "projects.sync_epilot": {"queue": "bulk"},
    "projects.webhook_reconcile": {"queue": "bulk"},
    "projects.reconcile_epilot": {"queue": "bulk"},
    "projects.task_digest": {"queue": "bulk"},
    "projects.promises_nightly": {"queue": "bulk"},
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # workers log through LOGGING above (LOG_FORMAT=json included)

# EPILOT
# One origin for every service (a sandbox, proxy or test double), or one URL per service.
EPILOT_API_TOKEN = env("EPILOT_API_TOKEN", default="")
EPILOT_API_URL = env("EPILOT_API_URL", default="")
EPILOT_ENTITY_API_URL = env("EPILOT_ENTITY_API_URL", default=EPILOT_API_URL or "https://entity.sls.epilot.io")
EPILOT_WORKFLOWS_EXECUTION_API_URL = env(
    "EPILOT_WORKFLOWS_EXECUTION_API_URL", default=EPILOT_API_URL or "https://workflows-execution.sls.epilot.io"
)
EPILOT_WORKFLOWS_DEFINITION_API_URL = env(
    "EPILOT_WORKFLOWS_DEFINITION_API_URL", default=EPILOT_API_URL or "https://workflows-definition.sls.epilot.io"
)
EPILOT_AUTOMATION_API_URL = env("EPILOT_AUTOMATION_API_URL", default=EPILOT_API_URL or "https://automation.sls.epilot.io")
EPILOT_WEBHOOKS_API_URL = env("EPILOT_WEBHOOKS_API_URL", default=EPILOT_API_URL or "https://webhooks.sls.epilot.io")
EPILOT_ORG_ID = env("EPILOT_ORG_ID", default="")
EPILOT_TIMEOUT_SECONDS = env.float("EPILOT_TIMEOUT_SECONDS", default=30.0)
EPILOT_WRITES_PER_MINUTE = env.int("EPILOT_WRITES_PER_MINUTE", default=450)
# The write budget (EPILOT_WRITES_PER_MINUTE) is counted for every process of the installation: in Redis (default
# in production: the broker's), or in a file that the processes of one host share (locally).
EPILOT_WRITE_BUDGET_URL = env("EPILOT_WRITE_BUDGET_URL", default=(
    CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
    else f"file://{VAR_DIR / 'epilot-write-budget.json'}"))
# Signing secrets (whsec_…) of epilot webhooks, comma-separated: several during a rotation.
EPILOT_WEBHOOK_SECRETS = env.list("EPILOT_WEBHOOK_SECRETS", default=[])
EPILOT_WEBHOOK_TOLERANCE_SECONDS = 300
EPILOT_WEBHOOK_MAX_BYTES = 1024 * 1024

# E-mail (the daily task digest): EMAIL_URL as django-environ reads it, e.g. smtp+tls://user:pass@mail.example:587;
# the console by default, so a local run prints the e-mails.
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="Ausbau Backoffice <backoffice@localhost>")
BACKOFFICE_BASE_URL = env("BACKOFFICE_BASE_URL", default="http://127.0.0.1:8000")
EPILOT_PORTAL_URL = env("EPILOT_PORTAL_URL", default="https://portal.epilot.cloud")
# No token and no URL: the embedded sandbox answers in-process from its own SQLite file.
EPILOT_SANDBOX_DB = Path(env("EPILOT_SANDBOX_DB", default=str(VAR_DIR / "epilot_sandbox.sqlite3")))

# SYNC
# Further epilot schemas to mirror generically (workflows can run on any entity type).
SYNC_EXTRA_SCHEMAS = env.list("SYNC_EXTRA_SCHEMAS", default=[])
# Lease of a sync's lock, renewed by a heartbeat; a killed run's lock is free after at most this long.
SYNC_LOCK_SECONDS = env.int("SYNC_LOCK_SECONDS", default=30)
# How far before the watermark an incremental run re-reads (epilot search is near-real-time).
SYNC_OVERLAP_SECONDS = env.int("SYNC_OVERLAP_SECONDS", default=120)
# A full pass reads and builds its pages, and reads executions, in forked processes beside the one writing them (a second core).
SYNC_BUILD_PAGES_IN_CHILD = env.bool("SYNC_BUILD_PAGES_IN_CHILD", default=True)
# Opportunities with any of these tags are Ausbau projects; empty means every opportunity.
AUSBAU_PROJECT_TAGS = env.list("AUSBAU_PROJECT_TAGS", default=[])

# BACK-OFFICE ACTIONS
# The opportunity status a conversion into an order sets (epilot's own value, kept as it is).
CONVERSION_TARGET_STATUS = env("CONVERSION_TARGET_STATUS", default="geschlossen")
# The workflow staff start by default ("Ausbau Glasfaser").
DEFAULT_WORKFLOW_DEFINITION = env("DEFAULT_WORKFLOW_DEFINITION", default="wfQpwhJF6J")
# The e-mail template the provisioned automation notifies the construction team with.
AUTOMATION_EMAIL_TEMPLATE_ID = env("AUTOMATION_EMAIL_TEMPLATE_ID", default="")
# A schema whose last successful sync is older than this counts as unhealthy (dashboard, /health/).
SYNC_HEALTH_MAX_AGE_MINUTES = env.int("SYNC_HEALTH_MAX_AGE_MINUTES", default=30)

# Promise dates (services/promises.py): the order attributes in epilot that hold the promised date of each milestone.
PROMISE_ATTRIBUTE_CONNECTED = env("PROMISE_ATTRIBUTE_CONNECTED", default="zugesagter_anschlusstermin")
PROMISE_ATTRIBUTE_ACTIVATED = env("PROMISE_ATTRIBUTE_ACTIVATED", default="zugesagte_aktivierung")
