"""Request and response bodies. Job rows never leave the API unconverted: see `job_public`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from model.network import ACTIVATIONS
from model.options import MAX_SEED, MAX_TARGET_PSNR, MIN_TARGET_PSNR
from model.presets import MAX_EXPERTS, MODELS, PRESETS, PRESETS_HELP
from model.signals import kinds
from service.jobs import Delivery, Job, Status, WebhookDelivery
from service.webhooks import MAX_URL_CHARS, check_url

WebhookEvent = Literal["start", "progress", "completed"]
DEFAULT_WEBHOOK_EVENTS: list[WebhookEvent] = ["completed"]
WEBHOOK_FIELDS = frozenset({"webhook", "webhook_events"})
"""JobCreate's fields that are not fit options."""


class JobCreate(BaseModel):
    """The fit options, sent as multipart form fields beside `file` (the CLI's options)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    preset: str = Field("fast", description=PRESETS_HELP, json_schema_extra={"enum": list(PRESETS)})
    steps: int | None = Field(None, ge=1, description="Training steps (default: the preset's).")
    lr: float | None = Field(None, gt=0, allow_inf_nan=False,
                             description="Adam learning rate (default: the preset's).")
    model: str = Field("neural-experts", description="Architecture.",
                       json_schema_extra={"enum": list(MODELS)})
    experts: int | None = Field(None, ge=2, le=MAX_EXPERTS,
                                description="Number of experts K (default: per kind).")
    activation: str = Field("sine", json_schema_extra={"enum": list(ACTIVATIONS)})
    protocol: str | None = Field(None, description='"paper": the paper\'s image protocol '
                                 "(Lanczos downscale by 4, centre 128x128 crop).")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    top_k: int | None = Field(None, ge=1, le=MAX_EXPERTS,
                              description="Train each point on its top-k experts only, 1..K "
                              "(default: all K, the paper's dense loss).")
    time_budget_s: float | None = Field(
        None, gt=0, allow_inf_nan=False,
        description="Seconds the fit may take, up to the service's time limit; its schedule is "
        "laid over them (default: NEXP_DEFAULT_TIME_BUDGET_S when `steps` is not set either).")
    target_psnr: float | None = Field(
        None, ge=MIN_TARGET_PSNR, le=MAX_TARGET_PSNR, allow_inf_nan=False,
        description="dB, images and audio: stop once the fit reaches it.")
    webhook: str | None = Field(
        None, max_length=MAX_URL_CHARS, description="An http(s) URL the service POSTs the job to "
        "(as GET /v1/jobs/{id} returns it) on each of `webhook_events`, signed as Standard Webhooks "
        "(webhook-id, webhook-timestamp, webhook-signature) with the service's NEXP_WEBHOOK_SECRET.")
    webhook_events: list[WebhookEvent] = Field(
        DEFAULT_WEBHOOK_EVENTS, min_length=1, description="Which events the webhook gets: `start`, "
        "`progress` (at most one a second) and `completed` (any final status); a field each, or "
        "comma-separated.")

    @model_validator(mode="before")
    @classmethod
    def _options_only(cls, data: Any) -> Any:
        # FastAPI hands a form model every form field, the upload too: set that one aside, so
        # extra="forbid" still catches a misspelt option instead of silently ignoring it.
        if isinstance(data, dict):
            return {name: value for name, value in data.items() if name != "file"}
        return data

    @field_validator("webhook_events", mode="before")
    @classmethod
    def _comma_separated(cls, events: Any) -> Any:
        # A form sends a list as repeated fields; `start,completed` in one reads the same.
        if isinstance(events, str):
            events = [events]
        if isinstance(events, list) and all(isinstance(event, str) for event in events):
            return list(dict.fromkeys(part.strip() for event in events for part in event.split(",")))
        return events

    @field_validator("webhook")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        return None if url is None else check_url(url)

    @model_validator(mode="after")
    def _events_need_a_webhook(self) -> JobCreate:
        # Compared with the default, not "was it sent": stored options are read back through here.
        if self.webhook is None and self.webhook_events != DEFAULT_WEBHOOK_EVENTS:
            raise ValueError("webhook_events was sent without a webhook")
        return self

    def fit_options(self) -> dict[str, Any]:
        """The options that model.fit takes (all but the webhook's and `protocol`, a loader's)."""
        return self.model_dump(exclude={"protocol", *WEBHOOK_FIELDS})


class ProgressPublic(BaseModel):
    step: int
    total: int
    loss: float | None
    metric: float | None
    metric_name: str = Field(description="What `metric` measures for this kind (psnr, mse...).")
    eta_s: float | None
    stage: str = Field(description="pretrain | fit | experts")


class JobErrorPublic(BaseModel):
    code: str = Field(description="invalid_signal, out_of_memory, time_limit, worker_lost, "
                                  "diverged, storage_error, invalid_options or internal")
    title: str
    detail: str


class DeliveryPublic(BaseModel):
    id: str = Field(description="The `webhook-id` header: the same on every retry of this event.")
    event: WebhookEvent
    status: Delivery = Field(description="pending (to be sent or sent again), delivered, or failed "
                                         "(given up after about an hour of retries)")
    attempts: int
    last_status_code: int | None = Field(description="The receiver's last answer, if it answered.")
    last_error: str | None = Field(description="Why the last attempt failed without an answer.")
    created_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None


class WebhookPublic(BaseModel):
    url: str
    events: list[WebhookEvent]
    deliveries: list[DeliveryPublic]


class JobPublic(BaseModel):
    id: str
    kind: str = Field(description="image, audio or sdf: detected from the upload's content.")
    status: Status
    filename: str
    options: JobCreate
    progress: ProgressPublic | None
    metrics: dict[str, float | str | None] | None = Field(
        description="metrics.json once the job has succeeded: numbers (psnr, ssim, mse, iou...) "
        "and `stop_reason`, the one string: steps, budget or target (which limit ended the fit).")
    error: JobErrorPublic | None
    attempts: int = Field(description="Deliveries to a worker so far.")
    resumed_from_step: int | None = Field(
        description="The training step the latest delivery resumed from (its worker had died and "
        "left a snapshot); null when the fit never resumed.")
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    urls: dict[str, str] = Field(description="Where to fetch this job's outputs and actions.")
    webhook: WebhookPublic | None = Field(description="The webhook and each delivery's outcome.")


class JobsPublic(BaseModel):
    items: list[JobPublic]
    total: int = Field(description="Jobs matching the filter, over all pages.")
    limit: int
    offset: int


COORD_LIMIT = 1e4
"""|coordinate| cap on queries: 100x the widest input frame (audio's [-100, 100]). Farther out the
sines give noise, and near float32's limit NaN, which a JSON answer cannot carry."""
Coordinate = Annotated[
    list[Annotated[float, Field(allow_inf_nan=False, ge=-COORD_LIMIT, le=COORD_LIMIT)]], Field(min_length=1)
]


QUERY_BYTES_PER_POINT = 128
"""Room for a point of three coordinates written with every digit of a double (`-0.123...e-05`,
24 characters each) plus separators and whitespace: the query body cap is this times the point
cap, so an over-long body is refused before it is read, let alone parsed."""


def query_body_bytes(max_points: int) -> int:
    return max_points * QUERY_BYTES_PER_POINT + 1024


class QueryCreate(BaseModel):
    coords: list[Coordinate] = Field(
        min_length=1, description="Points (N, d) in the model's input frame: (row, column) in "
        "[-1, 1]^2 for images, time in [-100, 100] for audio, (x, y, z) in [-1.2, 1.2]^3 for SDF; any "
        f"point within +-{COORD_LIMIT:g} is answered (outside the frame, by extrapolation).",
    )


class QueryPublic(BaseModel):
    values: list[list[float]] = Field(description="The model's output at each point (N, C).")
    experts: list[int] = Field(description="The expert each point was routed to (N,).")


def job_urls(job_id: str, kind: str) -> dict[str, str]:
    base = f"/v1/jobs/{job_id}"
    outputs = kinds()[kind].outputs if kind in kinds() else {}
    actions = ["events", "cancel", "input", "metrics", "weights", "query", *outputs]
    return {"self": base, **{name: f"{base}/{name}" for name in actions}}


def job_public(job: Job) -> JobPublic:
    kind = kinds().get(job.kind)
    progress = None
    if job.progress is not None:
        progress = ProgressPublic(**job.progress, metric_name=kind.metric_name if kind else "metric")
    return JobPublic(
        id=job.id, kind=job.kind, status=Status(job.status), filename=job.filename,
        options=JobCreate(**job.options), progress=progress, metrics=job.metrics,
        error=JobErrorPublic(**job.error) if job.error else None, attempts=job.attempts,
        resumed_from_step=job.resumed_from_step, cancel_requested=job.cancel_requested,
        created_at=job.created_at, updated_at=job.updated_at, started_at=job.started_at,
        finished_at=job.finished_at,
        urls=job_urls(job.id, job.kind), webhook=webhook_public(job),
    )


def webhook_public(job: Job) -> WebhookPublic | None:
    url = job.options.get("webhook")
    if url is None:
        return None
    return WebhookPublic(url=url, events=job.options["webhook_events"],
                         deliveries=[delivery_public(d) for d in job.deliveries])


def delivery_public(delivery: WebhookDelivery) -> DeliveryPublic:
    pending = delivery.status == Delivery.PENDING
    return DeliveryPublic(
        id=delivery.id, event=delivery.event, status=Delivery(delivery.status),
        attempts=delivery.attempts, last_status_code=delivery.last_status_code,
        last_error=delivery.last_error, created_at=delivery.created_at,
        next_attempt_at=delivery.next_attempt_at if pending else None,
        delivered_at=delivery.delivered_at,
    )
