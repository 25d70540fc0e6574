"""The service's one settings object, read from the environment by the API and the worker.

Every field is set by an environment variable named NEXP_ + the field name in capitals, except
the port, which follows the usual `$PORT` convention (NEXP_PORT also works):

    NEXP_DATA_DIR             ./var   root of everything the service writes on this machine
    NEXP_QUEUE                nexp.fit the broker queue this service's API and workers share
    NEXP_BROKER_URL           ""      Celery broker; empty = embedded kombu filesystem transport
                                      under $NEXP_DATA_DIR/broker; redis://host:6379/0 for many
    NEXP_DATABASE_URL         ""      SQLAlchemy URL; empty = SQLite at $NEXP_DATA_DIR/jobs.sqlite3;
                                      postgresql+psycopg://user@host:5432/db for many machines
    NEXP_STORAGE_DIR          ""      artifact folder; empty = $NEXP_DATA_DIR/artifacts
    NEXP_STORAGE_URL          ""      where artifacts live: empty = the folder above; file:///path
                                      = another folder; s3://bucket/prefix = an S3-compatible
                                      object store (for many machines), reached with the standard
                                      AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_DEFAULT_REGION
    NEXP_S3_ENDPOINT_URL      ""      the object store's address when it is not AWS, e.g.
                                      http://minio:9000 (empty = AWS S3)
    NEXP_LOG_LEVEL            INFO    the API's log level (a worker's is its --loglevel); every
                                      line is a JSON object with request_id and job_id
    NEXP_CACHE_DIR            ""      manager-pretraining cache; empty = $NEXP_DATA_DIR/cache
    NEXP_HOST / PORT          127.0.0.1 / 8000   where `python -m api` listens
    NEXP_ALLOWED_HOSTS        []      JSON list of more Host names /v1 answers while auth is off
                                      (a reverse proxy's name); localhost, 127.0.0.1 and [::1]
                                      are always allowed, and any Host once API keys are on
    NEXP_CORS_ORIGINS         []      JSON list of origins whose pages may call /v1 (CORS); none
                                      by default: a foreign page's writes get 403
    NEXP_BODY_TIMEOUT_S       30      a request body that sends nothing for this long gets 408
    NEXP_MAX_UPLOAD_BYTES     request body cap (413 before anything is spooled)
    NEXP_MAX_...              each signal kind's caps, declared with their defaults and reasons
                              in its file (model/signals/*.py: `caps`): NEXP_MAX_IMAGE_PIXELS,
                              NEXP_MAX_RENDER_PIXELS (image), NEXP_MAX_AUDIO_SECONDS,
                              NEXP_MAX_SAMPLE_RATE (audio), NEXP_MAX_SDF_POINTS,
                              NEXP_MAX_MESH_RESOLUTION (sdf)
    NEXP_MAX_STEPS            largest `steps` a job may ask for
    NEXP_MAX_QUERY_POINTS     most coordinates in one POST .../query
    NEXP_LOAD_OPTIONS         JSON: more options of each kind's loader (sampling and evaluation
                              effort), e.g. {"sdf": {"eval_resolution": 64}}; the caps win
    NEXP_TIME_LIMIT_S         a job's time budget (Celery soft limit: the job fails `time_limit`)
    NEXP_TIME_LIMIT_GRACE_S   hard limit = soft + grace: a child ignoring the soft one is killed
    NEXP_DEFAULT_TIME_BUDGET_S 300    a fit's time budget when a job sets neither `steps` nor
                                      `time_budget_s` (0 = none: the preset's steps); set it per
                                      worker device, e.g. 60 on a GPU worker
    NEXP_SNAPSHOT_EVERY_S     15      a running fit stores its resumable state (a snapshot) this often;
                                      a job delivered again after its worker died resumes from it
                                      (0 = no snapshots: a redelivered job starts over)
    NEXP_MAX_ATTEMPTS         deliveries of one job before it fails `worker_lost` (poison cap)
    NEXP_HEARTBEAT_S          how often a running job writes progress and reads its cancel flag
    NEXP_STALE_AFTER_S        a running job silent this long has lost its worker and is requeued;
                              queued jobs this old without a broker message are published again
    NEXP_CANCEL_GRACE_S       a cancel not honoured between steps this long ends the worker child
    NEXP_DEVICE               torch device for fits: auto | cpu | cuda | cuda:N (a worker
                              refuses to start on a machine without that device)
    NEXP_TORCH_THREADS        torch intra-op threads per process (0 = torch's default)
    NEXP_RENDER_THREADS       renders computed at once by one API process
    NEXP_RENDER_TIMEOUT_S     60      a render's time limit, counted from the request that started it:
                                      past it the render stops between chunks and answers 503
                                      `render_timeout`
    NEXP_RENDERS_PER_KEY      4       render requests one API key may have in progress at once (429
                                      `too_many_renders` past it; one allowance for all while auth is off)
    NEXP_RENDER_CACHE_BYTES   bytes of rendered outputs kept in memory per API process
    NEXP_MODEL_CACHE_SIZE     loaded checkpoints kept in memory per API process
    NEXP_REQUIRE_KEYS         false   true: /v1 needs an API key even before `nexp keys create` made
                                      one (auth is on by itself once any key exists)
    NEXP_QUOTA_ACTIVE_JOBS    0       jobs one key may have queued or running at once (0 = no cap)
    NEXP_QUOTA_UPLOADS_PER_MINUTE 0   new jobs one key may submit per minute (0 = no cap)
    NEXP_QUOTA_STORED_BYTES   0       artifact bytes (inputs + checkpoints) one key may keep
    NEXP_MAX_QUEUE_DEPTH      1000    queued jobs (every key's) at which new jobs get 503 (0 = none)
    NEXP_RETENTION_S          0       finished jobs and their artifacts are deleted this long after
                                      they end (0 = kept until deleted by hand)
    NEXP_RETENTION_SWEEP_S    300     how often each API process looks for expired jobs
    NEXP_WEBHOOK_SECRET       ""      signs webhook deliveries (Standard Webhooks): whsec_ + base64 of
                                      24 to 64 random bytes; empty = jobs may not ask for a webhook
    NEXP_WEBHOOK_ALLOW_PRIVATE false  true: webhooks may go to loopback and private addresses (one
                                      machine, tests); otherwise they are refused at create and send
    NEXP_WEBHOOK_TIMEOUT_S    10      a receiver that has not answered in this long has failed once
    NEXP_WEBHOOK_RETRY_S      5       first wait before a failed delivery is sent again (doubling)
    NEXP_WEBHOOK_RETRY_FOR_S  3600    a delivery is given up this long after its event
    NEXP_WEBHOOK_POLL_S       0.5     how often each API process looks for deliveries that are due
    NEXP_BENCH_DATA_DIR       ~/.cache/nexp/data  benchmark data (`python -m bench.data fetch` fills it)
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from model.signals import Cap, kinds

MIB = 1 << 20
STORAGE_SCHEMES = ("", "file", "s3")


def signal_caps() -> list[Cap]:
    return [cap for kind in kinds().values() for cap in kind.caps]


# One setting per cap a signal kind declares (model/signals/*.py), so a new kind's caps are
# settings without an edit here: NEXP_MAX_IMAGE_PIXELS, NEXP_MAX_SAMPLE_RATE...
SignalCaps = create_model(  # type: ignore[call-overload]
    "SignalCaps", __base__=BaseSettings,
    **{cap.setting: (type(cap.default), Field(cap.default, gt=0, description=cap.description))
       for cap in signal_caps()},
)


class Settings(SignalCaps):
    model_config = SettingsConfigDict(env_prefix="NEXP_", frozen=True)

    data_dir: Path = Path("var")
    broker_url: str = ""
    queue: str = Field("nexp.fit", min_length=1)
    database_url: str = ""
    storage_dir: Path | None = None
    storage_url: str = ""
    s3_endpoint_url: str = ""
    cache_dir: Path | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    host: str = "127.0.0.1"
    port: int = Field(8000, validation_alias=AliasChoices("PORT", "NEXP_PORT"))
    allowed_hosts: list[str] = []
    cors_origins: list[str] = []
    body_timeout_s: PositiveFloat = 30.0

    max_upload_bytes: PositiveInt = 256 * MIB
    max_steps: PositiveInt = 100_000
    max_query_points: PositiveInt = 100_000
    load_options: dict[str, dict[str, int | float | str]] = {}

    time_limit_s: PositiveInt = 6 * 3600  # the paper preset on a large image, on a CPU
    time_limit_grace_s: PositiveInt = 60
    default_time_budget_s: float = Field(300.0, ge=0, allow_inf_nan=False)
    snapshot_every_s: float = Field(15.0, ge=0, allow_inf_nan=False)
    """5 minutes: a CPU fit of the fast preset on a 128 x 128 image takes ~80 s, on a full-size
    photo ~15 min; a budget ends every default fit in a time the README states."""
    max_attempts: PositiveInt = 2  # the issue: redelivered once, then failed
    heartbeat_s: PositiveFloat = 1.0
    stale_after_s: PositiveFloat = 60.0
    cancel_grace_s: PositiveFloat = 15.0

    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    torch_threads: int = Field(0, ge=0)
    render_threads: PositiveInt = 2
    render_timeout_s: PositiveFloat = 60.0  # a 4-megapixel photo's native-size render fits in it
    renders_per_key: PositiveInt = 4  # a page asks for a render and its expert map at once
    render_cache_bytes: int = Field(256 * MIB, ge=0)
    model_cache_size: PositiveInt = 4

    require_keys: bool = False
    quota_active_jobs: int = Field(0, ge=0)
    quota_uploads_per_minute: int = Field(0, ge=0)
    quota_stored_bytes: int = Field(0, ge=0)
    max_queue_depth: int = Field(1000, ge=0)  # jobs waiting hours for a GPU help no one: say so
    retention_s: float = Field(0, ge=0)
    retention_sweep_s: PositiveFloat = 300.0  # deletion within minutes of expiry is soon enough
    bench_data_dir: Path = Path("~/.cache/nexp/data")

    webhook_secret: str = Field("", pattern=r"^(whsec_[A-Za-z0-9+/]{32,}={0,2})?$")
    webhook_allow_private: bool = False
    webhook_timeout_s: PositiveFloat = 10.0
    webhook_retry_s: PositiveFloat = 5.0
    webhook_retry_for_s: PositiveFloat = 3600.0  # the issue: retried for about an hour
    webhook_poll_s: PositiveFloat = 0.5  # a `completed` event leaves within this of the fit's end

    @field_validator("data_dir", "storage_dir", "cache_dir", "bench_data_dir")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        # The API and its worker subprocess must agree on paths whatever their working folders.
        return None if path is None else path.expanduser().resolve()

    @field_validator("storage_url")
    @classmethod
    def _known_store(cls, url: str, info: ValidationInfo) -> str:
        parts = urlsplit(url)
        if parts.scheme not in STORAGE_SCHEMES:
            raise ValueError(f"storage URL {url!r} is not s3://bucket/prefix, file:///folder or empty")
        if parts.scheme == "s3" and not parts.netloc:
            raise ValueError(f"storage URL {url!r} names no bucket (s3://bucket/prefix)")
        if parts.scheme == "file" and (parts.netloc not in ("", "localhost") or not parts.path):
            raise ValueError(f"storage URL {url!r} is not a local folder (file:///folder)")
        if url and info.data.get("storage_dir"):
            raise ValueError(f"NEXP_STORAGE_DIR and NEXP_STORAGE_URL={url!r} both name the "
                             "artifact store: set one")
        return url

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, level: object) -> object:
        return level.upper() if isinstance(level, str) else level

    @property
    def embedded_broker(self) -> bool:
        return not self.broker_url

    @property
    def broker(self) -> str:
        return self.broker_url or "filesystem://localhost//"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'jobs.sqlite3'}"

    @property
    def artifacts_dir(self) -> Path:
        """The local artifact folder (unused when NEXP_STORAGE_URL is s3://)."""
        if self.storage_url.startswith("file:"):
            return Path(urlsplit(self.storage_url).path).resolve()
        return self.storage_dir or self.data_dir / "artifacts"

    @property
    def pretrain_cache_dir(self) -> Path:
        return self.cache_dir or self.data_dir / "cache"

    @property
    def scratch_dir(self) -> Path:
        """Uploads being validated and inputs being fitted; on the data disk, not in /tmp."""
        return self.data_dir / "tmp"

    @property
    def hard_time_limit_s(self) -> int:
        return self.time_limit_s + self.time_limit_grace_s

    @field_validator("load_options")
    @classmethod
    def _known_loader_options(
        cls, value: dict[str, dict[str, int | float | str]]
    ) -> dict[str, dict[str, int | float | str]]:
        for kind, options in value.items():
            if kind not in kinds():
                raise ValueError(f"unknown signal kind {kind!r} (kinds: {', '.join(kinds())})")
            loader = inspect.signature(kinds()[kind].loader)
            accepted = set(loader.parameters) - {"path", "device", "protocol"}
            unknown = sorted(set(options) - accepted)
            if unknown:
                raise ValueError(f"{kind} loading has no option {', '.join(unknown)} "
                                 f"(options: {', '.join(sorted(accepted))})")
        return value

    def cap(self, setting: str) -> int | float:
        """The value of a signal kind's cap (`Cap.setting`), e.g. cap("max_sample_rate")."""
        value: int | float = getattr(self, setting)
        return value

    def loader_options(self, kind: str) -> dict[str, int | float | str]:
        """Keyword options for kind's `load`: NEXP_LOAD_OPTIONS, then the kind's caps on top."""
        caps = {cap.load_option: self.cap(cap.setting)
                for cap in kinds()[kind].caps if cap.load_option is not None}
        return {**self.load_options.get(kind, {}), **caps}


@lru_cache
def get_settings() -> Settings:
    return Settings()
