"""Settings for marketing_agents: one module, every deployment-specific value from the environment.

Defaults run on a laptop (SQLite file, Redis on 127.0.0.1:6379, DEBUG off); production changes only
environment variables. See README.md, "Configuration", for the list.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import dj_database_url
from corsheaders.defaults import default_headers
from django.core.exceptions import ImproperlyConfigured

from marketing_agents import redisconf
from marketing_agents.env import (
    env_bool,
    env_choice,
    env_decimal,
    env_int,
    env_origins,
    env_str,
    env_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent
RUN_DIR = BASE_DIR / ".run"


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept in .run/ (never logged)."""
    key = env_str("SECRET_KEY")
    if key:
        if len(key) < 32:
            raise ImproperlyConfigured("SECRET_KEY must be at least 32 characters long.")
        return key
    path = RUN_DIR / "secret_key"
    if not path.exists():
        RUN_DIR.mkdir(exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()

# Metrics from every process (web and workers) are written here and added up by /metrics. It must
# be set before prometheus_client is first imported; `make run` and `make test` give each run a fresh one.
PROMETHEUS_MULTIPROC_DIR = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(RUN_DIR / "metrics"))
Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = [h.strip() for h in env_str("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",") if h.strip()]
PORT = env_int("PORT", 8000, minimum=1, maximum=65535)
# Connections the kernel queues for a web process before it accepts them (daphne leaves it at 50):
# when a web process dies, thousands of its clients come back at once to the others.
WEB_LISTEN_BACKLOG = env_int("WEB_LISTEN_BACKLOG", 2048, minimum=1, maximum=65535)

# Origins allowed for CORS and for WebSocket handshakes, besides the server's own origin.
ALLOWED_ORIGINS = env_origins("ALLOWED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "rest_framework_simplejwt",
    "rest_framework_api_key",
    "axes",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "campaigns",
    "eventlog",
    "accounts",
    "webhooks",
    "realtime",
    "orchestration",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "marketing_agents.errors.OutageMiddleware",
    "axes.middleware.AxesMiddleware",  # a locked-out login on the admin or the pages: the refusal page
]

# --- Logins (accounts/lockout.py, django-axes) ---------------------------------------------------------------
# Failed logins are counted per username and per client address; past the limit, logins are refused
# (429, Retry-After) for the lockout time, before any password is hashed.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(seconds=env_int("LOGIN_LOCKOUT_SECONDS", 900, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
# A success clears the failures of its username only (accounts/lockout.py): axes' own reset would also
# clear the address's, so logging in to one's own account between guesses would lift the lockout.
AXES_RESET_ON_SUCCESS = False
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False  # a fixed window: refusals do not extend it
AXES_CLIENT_IP_CALLABLE = "accounts.lockout.client_ip"
AXES_LOCKOUT_CALLABLE = "accounts.lockout.lockout_response"
AXES_SENSITIVE_PARAMETERS = ["password"]

# REST requests a minute per user, or per API key (accounts/throttling.py); 0: no limit.
API_RATE_PER_MINUTE = env_int("API_RATE_PER_MINUTE", 600, minimum=0)
API_STAFF_RATE_PER_MINUTE = env_int("API_STAFF_RATE_PER_MINUTE", 0, minimum=0)

# --- Fair shares per user (docs/API.md, "Limits") -------------------------------------------------------
# Realtime connections a user may hold open at once, native, SignalR and SSE together, across every web
# process (realtime/limits.py); 0: no cap. Staff apart (0, the default: not capped).
WS_MAX_CONNECTIONS_PER_USER = env_int("WS_MAX_CONNECTIONS_PER_USER", 100, minimum=0)
WS_STAFF_MAX_CONNECTIONS_PER_USER = env_int("WS_STAFF_MAX_CONNECTIONS_PER_USER", 0, minimum=0)
# Runs of one account's campaigns active at once (orchestration/fairshare.py); more are queued, not
# refused, and start in order as others finish. 0: no limit. An account's own limit (admin) overrides it.
RUNS_MAX_ACTIVE_PER_USER = env_int("RUNS_MAX_ACTIVE_PER_USER", 5, minimum=0)

ROOT_URLCONF = "marketing_agents.urls"
ASGI_APPLICATION = "marketing_agents.asgi.application"

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
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------

DATABASE_URL = env_url(
    "DATABASE_URL",
    f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
    schemes=("sqlite", "postgres", "postgresql", "pgsql"),
)
# Persistent connections: the consumers' database calls would otherwise open a connection each time.
_database = dj_database_url.parse(
    DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60, minimum=0), conn_health_checks=True
)
if _database["ENGINE"] != "django.db.backends.sqlite3" and not env_str("SECRET_KEY"):
    # A shared database means processes on several hosts: each would generate its own key, and a
    # token signed on one host (JWT, SignalR connection token, session) would fail on the next.
    raise ImproperlyConfigured(
        "SECRET_KEY must be set in the environment when DATABASE_URL names a shared database "
        "(PostgreSQL): every web process and worker, on every host, must sign with the same key "
        "(docs/DEPLOY.md)."
    )
if _database["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers and one writer work at once; IMMEDIATE takes the write lock at BEGIN so two
    # processes never deadlock upgrading a read lock, and the timeout makes a writer wait, not fail.
    _database["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;",
    }
else:
    _database.setdefault("OPTIONS", {})
    _database["OPTIONS"].setdefault("connect_timeout", 5)
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, channel layer, Celery ------------------------------------------------------------------

REDIS_URL = env_url(
    "REDIS_URL", "redis://127.0.0.1:6379/0", schemes=("redis", "rediss", "unix", redisconf.SENTINEL_SCHEME)
)
if _database["ENGINE"] != "django.db.backends.sqlite3" and not env_str("REDIS_URL"):
    # The same for Redis: with a default of its own on each host, a worker's events would reach only
    # the web processes of its host, silently.
    raise ImproperlyConfigured(
        "REDIS_URL must be set in the environment when DATABASE_URL names a shared database "
        "(PostgreSQL): every web process and worker, on every host, must use the same Redis "
        "(docs/DEPLOY.md)."
    )
_redis = redisconf.parse(REDIS_URL)  # a plain Redis, or a Sentinel set (marketing_agents/redisconf.py)

CHANNEL_LAYER_CAPACITY = env_int("CHANNEL_LAYER_CAPACITY", 1000, minimum=1)
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # redis-py 8 defaults socket_timeout to 5 s, which aborts the layer's 5 s blocking
            # BZPOPMIN every time a channel is idle (django/channels_redis#422): allow longer reads.
            "hosts": [redisconf.layer_host(_redis, socket_timeout=15, socket_connect_timeout=5)],
            "capacity": CHANNEL_LAYER_CAPACITY,
            "expiry": 60,
            "group_expiry": 86400,
            "prefix": env_str("CHANNEL_LAYER_PREFIX", "asgi"),
        },
    },
}
# The layer that carries campaign events to the web processes' fan-outs (realtime.fanout). Redis pub/sub
# by default: one PUBLISH per event and messages pushed to each process, where the core layer
# pays several round trips per message received. Either way delivery is at-most-once and the
# fan-outs fill gaps from the event log; "core" (with CHANNEL_LAYER_CAPACITY) is there to prove it.
REALTIME_LAYER = env_choice("REALTIME_LAYER", "pubsub", ("pubsub", "core"))
CHANNEL_LAYERS["realtime"] = (
    {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": CHANNEL_LAYERS["default"]["CONFIG"]["hosts"], "prefix": "rt"},
    }
    if REALTIME_LAYER == "pubsub"
    else {**CHANNEL_LAYERS["default"], "CONFIG": {**CHANNEL_LAYERS["default"]["CONFIG"], "prefix": "rt"}}
)

# Longest step we allow (seconds); the broker must not redeliver a task before that.
ORCHESTRATION_STEP_TIMEOUT = env_int("ORCHESTRATION_STEP_TIMEOUT", 900, minimum=10)
ORCHESTRATION_SIMULATION = env_bool("ORCHESTRATION_SIMULATION", False)  # honour settings.simulate: tests, demos
CELERY_BROKER_URL = redisconf.broker_url(_redis)
# kombu's Redis transport (or its Sentinel transport), minus the crash that stopped workers when
# Redis restarted (see the module).
CELERY_BROKER_TRANSPORT = "marketing_agents.broker:" + ("SentinelTransport" if _redis.is_sentinel else "Transport")
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": ORCHESTRATION_STEP_TIMEOUT * 4,
    **redisconf.broker_transport_options(_redis),
}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_TIME_LIMIT = ORCHESTRATION_STEP_TIMEOUT + 60
CELERY_TASK_SOFT_TIME_LIMIT = ORCHESTRATION_STEP_TIMEOUT
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = "UTC"

# --- WebSocket limits (PROTOCOL.md §5) and delivery -------------------------------------------------

WS_MAX_FRAME_BYTES = env_int("WS_MAX_FRAME_BYTES", 100 * 1024, minimum=1024)
WS_MAX_FRAMES_PER_SECOND = env_int("WS_MAX_FRAMES_PER_SECOND", 100, minimum=1)
WS_MAX_SUBSCRIPTIONS = env_int("WS_MAX_SUBSCRIPTIONS", 10, minimum=1)
WS_IDLE_TIMEOUT_SECONDS = env_int("WS_IDLE_TIMEOUT_SECONDS", 60, minimum=1)
WS_PING_INTERVAL_SECONDS = env_int("WS_PING_INTERVAL_SECONDS", 15, minimum=1)
# Bytes a connection may have waiting in the server's send buffer before its frames are held back
# (chunks merged, then dropped; durable events re-read from the log later), and how long it may stay
# that far behind before it is closed with 1013.
WS_OUTBOUND_BUFFER_BYTES = env_int("WS_OUTBOUND_BUFFER_BYTES", 512 * 1024, minimum=1024)
WS_SLOW_CLIENT_SECONDS = env_int("WS_SLOW_CLIENT_SECONDS", 10, minimum=1)
# Each web process reads the heads of the campaigns it serves this often (one query), so an event
# whose layer message was lost reaches its subscribers within about two intervals (PROTOCOL.md §9).
REALTIME_HEAD_CHECK_SECONDS = float(env_decimal("REALTIME_HEAD_CHECK_SECONDS", "1", minimum=Decimal("0.05")))
REALTIME_KEY_CHECK_SECONDS = float(env_decimal("REALTIME_KEY_CHECK_SECONDS", "2", minimum=Decimal("0.05")))
# SignalR stateful reconnect (docs/SIGNALR.md): how long a dropped connection may come back with its
# token (0 turns the feature off: negotiate stops offering it), and how many sent messages a client may
# leave unacknowledged before its session is ended (the @microsoft/signalr client acks every second).
SIGNALR_RECONNECT_WINDOW_SECONDS = env_int("SIGNALR_RECONNECT_WINDOW_SECONDS", 120, minimum=0)
SIGNALR_UNACKED_LIMIT = env_int("SIGNALR_UNACKED_LIMIT", 10_000, minimum=100)
# Event-log retention: a resume from before the oldest kept event gets a snapshot instead.
EVENT_RETENTION_DAYS = env_int("EVENT_RETENTION_DAYS", 30, minimum=1)

# --- Agents ---------------------------------------------------------------------------------------

AGENT_PROVIDER = env_choice("AGENT_PROVIDER", "template", ("template", "openai"))
AGENT_CHUNK_DELAY_MS = env_int("AGENT_CHUNK_DELAY_MS", 30, minimum=0, maximum=60_000)
OPENAI_BASE_URL = env_url("OPENAI_BASE_URL", "https://api.openai.com/v1", schemes=("http", "https"))
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
OPENAI_MODEL = env_str("OPENAI_MODEL", "gpt-4o-mini")
OPENAI_TIMEOUT_SECONDS = env_int("OPENAI_TIMEOUT_SECONDS", 60, minimum=1)
# Prices per 1,000 tokens, for usage and budgets (the template provider's are nominal, see docs/ORCHESTRATION.md).
OPENAI_PRICE_PROMPT_PER_1K = env_decimal("OPENAI_PRICE_PROMPT_PER_1K", "0")
OPENAI_PRICE_COMPLETION_PER_1K = env_decimal("OPENAI_PRICE_COMPLETION_PER_1K", "0")
# Retries of a step on transient errors: attempts in all, and the backoff (base * 2^n, capped, with jitter).
AGENT_MAX_ATTEMPTS = env_int("AGENT_MAX_ATTEMPTS", 4, minimum=1, maximum=20)
AGENT_RETRY_BASE_MS = env_int("AGENT_RETRY_BASE_MS", 1000, minimum=0)
AGENT_RETRY_MAX_MS = env_int("AGENT_RETRY_MAX_MS", 30_000, minimum=0)
# A running step renews its lease between chunks (at most every 0.25 s); the recovery task (every
# RUN_RECOVERY_INTERVAL_SECONDS) requeues steps whose lease expired, i.e. whose worker died.
RUN_LEASE_SECONDS = env_int("RUN_LEASE_SECONDS", 30, minimum=1)
RUN_RECOVERY_INTERVAL_SECONDS = env_int("RUN_RECOVERY_INTERVAL_SECONDS", 15, minimum=1)
# A queued step nobody claimed for this long is queued again (its message was lost).
RUN_REQUEUE_AFTER_SECONDS = env_int("RUN_REQUEUE_AFTER_SECONDS", 60, minimum=1)
CELERY_BEAT_SCHEDULE = {
    "recover-stalled-runs": {
        "task": "orchestration.tasks.runs_recover",
        "schedule": float(RUN_RECOVERY_INTERVAL_SECONDS),
    },
    "prune-event-log": {"task": "eventlog.tasks.events_prune", "schedule": 3600.0},
    # A spend total whose flush task was lost (the broker down when it was queued, a worker killed
    # with it) is announced by this sweep instead.
    "announce-pending-spend": {"task": "accounts.tasks.flush_pending_spend", "schedule": 10.0},
    # Webhooks whose next delivery is due and that no worker is delivering (a retry after a long
    # backoff, a task lost with the broker or a killed worker).
    "deliver-due-webhooks": {"task": "webhooks.tasks.deliver_due", "schedule": 15.0},
}

# --- Webhooks (PROTOCOL.md §12) -----------------------------------------------------------------------

# Deliveries to loopback, private, link-local or reserved addresses are refused unless this is set.
WEBHOOKS_ALLOW_PRIVATE = env_bool("WEBHOOKS_ALLOW_PRIVATE", False)
WEBHOOK_TIMEOUT_SECONDS = float(env_decimal("WEBHOOK_TIMEOUT_SECONDS", "10", minimum=Decimal("0.1")))
WEBHOOK_MAX_BODY_BYTES = env_int("WEBHOOK_MAX_BODY_BYTES", 256 * 1024, minimum=1024)
# The waits before each retry, in seconds: with the first attempt, 6 attempts over about 7.5 hours.
try:
    WEBHOOK_RETRY_DELAYS = [
        float(delay) for delay in env_str("WEBHOOK_RETRY_DELAYS", "5,300,1800,7200,18000").split(",") if delay.strip()
    ]
except ValueError:
    raise ImproperlyConfigured("WEBHOOK_RETRY_DELAYS must be comma-separated seconds, e.g. 5,300,1800.") from None
if any(delay < 0 for delay in WEBHOOK_RETRY_DELAYS):
    raise ImproperlyConfigured("WEBHOOK_RETRY_DELAYS must not be negative.")
if AGENT_PROVIDER == "openai" and not OPENAI_MODEL:
    raise ImproperlyConfigured("OPENAI_MODEL must be set when AGENT_PROVIDER=openai.")

# --- Auth, API ------------------------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/campaigns/"
LOGOUT_REDIRECT_URL = "/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",  # API keys; a JWT goes on to the next
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["campaigns.api.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "campaigns.api.pagination.PageNumberPagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "campaigns.api.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["accounts.throttling.PerUserRateThrottle"],
    "DATETIME_FORMAT": "%Y-%m-%dT%H:%M:%S.%fZ",
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=env_int("JWT_ACCESS_SECONDS", 900, minimum=1)),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=env_int("JWT_REFRESH_SECONDS", 86400, minimum=1)),
    "SIGNING_KEY": SECRET_KEY,
    "UPDATE_LAST_LOGIN": False,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Marketing agents API",
    "DESCRIPTION": "Campaigns, orchestration runs, artifacts, audits and the campaign event log.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"StepEnum": "orchestration.plan.FULL_PLAN"},
    # What drf-spectacular cannot see: error answers, settings keys, text rules, links (marketing_agents/schema.py).
    "PREPROCESSING_HOOKS": ["marketing_agents.schema.load_extensions"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "marketing_agents.schema.document_errors",
    ],
}

CORS_ALLOWED_ORIGINS = ALLOWED_ORIGINS
CORS_ALLOW_CREDENTIALS = True
CORS_URLS_REGEX = r"^/(api|hubs)/.*$"
# What the SignalR clients send on negotiate (docs/SIGNALR.md), besides django-cors-headers' defaults.
CORS_ALLOW_HEADERS = (*default_headers, "x-signalr-user-agent")
CSRF_TRUSTED_ORIGINS = ALLOWED_ORIGINS

# --- Static files, i18n ---------------------------------------------------------------------------

STATIC_URL = "/static/"
# Unset by default: WhiteNoise serves straight from the apps' static folders (USE_FINDERS). Set it
# and run collectstatic for production.
STATIC_ROOT = env_str("STATIC_ROOT") or None
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Logging --------------------------------------------------------------------------------------

LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "redact": {"()": "marketing_agents.logging.RedactSecretsFilter"},
        "outage": {"()": "marketing_agents.logging.OutageFilter"},
        "client_error": {"()": "marketing_agents.logging.ClientErrorFilter"},
    },
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["outage", "client_error", "redact"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        # httpx logs every request's full URL at INFO: a webhook's URL often carries its receiver's token.
        "httpx": {"level": "WARNING"},
    },
}
