"""Request and response bodies. Job rows never leave the API unconverted: see `job_public`."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from model.options import LoadOptions, default_of, option_of, user_options, value_type
from model.signals import kinds
from service.jobs import FINISHED, Delivery, Job, Status, WebhookDelivery, utcnow
from service.webhooks import MAX_URL_CHARS, check_url

WebhookEvent = Literal["start", "progress", "completed"]
DEFAULT_WEBHOOK_EVENTS: list[WebhookEvent] = ["completed"]
WEBHOOK_FIELDS = frozenset({"webhook", "webhook_events"})
"""JobCreate's fields that are not fit options."""
LOAD_FIELDS = frozenset(f.name for f in fields(LoadOptions))
"""JobCreate's fields that tell how to read the upload, not how to fit it."""


API_OPTIONS = {f.name: f for f in user_options() if option_of(f).api}
"""The fit options a job's form takes; the service decides the others (device, compile)."""


def fit_field(name: str) -> Any:
    """JobCreate's field for the declared option `name`: its default, bounds, choices and help.
    A choice is checked against its registry after the form is read (api.uploads), so the 422
    names the choices as the fit code does; the schema lists them as an enum (with null where
    the option may be left unset, as a job's stored options show it)."""
    declared = API_OPTIONS[name]
    spec = option_of(declared)
    unset = [None] if default_of(declared) is None else []
    return Field(
        default_of(declared), description=spec.help + spec.service_note, ge=spec.ge, gt=spec.gt,
        le=spec.le, allow_inf_nan=False if value_type(name) is float else None,
        json_schema_extra={"enum": [*spec.names(), *unset]} if spec.names() else None,
    )


class JobCreate(BaseModel):
    """The fit options, sent as multipart form fields beside `file` (the CLI's options)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    # One line per declared fit option (model.options): its default, bounds, choices and help
    # come from there; `check_declared` below checks that the two lists agree.
    preset: str = fit_field("preset")
    steps: int | None = fit_field("steps")
    lr: float | None = fit_field("lr")
    model: str = fit_field("model")
    experts: int | None = fit_field("experts")
    activation: str = fit_field("activation")
    seed: int = fit_field("seed")
    top_k: int | None = fit_field("top_k")
    time_budget_s: float | None = fit_field("time_budget_s")
    target_psnr: float | None = fit_field("target_psnr")
    protocol: str | None = fit_field("protocol")
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
        """The options that model.fit takes (all but the webhook's and the loader's)."""
        return self.model_dump(exclude={*LOAD_FIELDS, *WEBHOOK_FIELDS})


def check_declared(form: type[BaseModel]) -> None:
    """A declared option that `form` lacks, or a field it has that none declares, is an error
    at import, not a form that silently offers less than the CLI."""
    missing = set(API_OPTIONS) ^ (set(form.model_fields) - WEBHOOK_FIELDS)
    if missing:
        raise TypeError(f"{form.__name__} and model.options disagree on {sorted(missing)}")


check_declared(JobCreate)


class ProgressPublic(BaseModel):
    step: int
    total: int
    loss: float | None
    metric: float | None
    metric_name: str = Field(description="What `metric` measures for this kind (psnr, mse...).")
    eta_s: float | None = Field(description="Seconds left; null once the job has ended.")
    stage: str = Field(description="pretrain | fit | experts (the experts-only part of fitting) "
                                   "| evaluate")


class HistoryPublic(BaseModel):
    """The progress reports so far, as columns: at most a few hundred points, evenly spaced."""

    every: int = Field(description="Points lie at steps that are multiples of this (it doubles "
                                   "as the fit grows), and the last one at the latest step.")
    step: list[int]
    loss: list[float | None]
    metric: list[float | None] = Field(description="As progress's `metric` (`metric_name`).")


class StagePublic(BaseModel):
    name: Literal["pretrain", "fit", "evaluate"] = Field(
        description="pretrain: the manager's pretraining; fit: training (both stages); "
                    "evaluate: the final metrics.")
    started_at: datetime
    ended_at: datetime | None = Field(description="null while it runs.")
    elapsed_s: float = Field(description="Seconds in it: until it ended, the job ended, or now.")


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
    kind: str = Field(description="Detected from the upload's content: " + "; ".join(
        f"{kind.name} ({kind.description})" for kind in kinds().values()) + ".")
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
    snapshot_step: int | None = Field(
        description="While it runs: the step of the fit's latest snapshot, which the outputs "
        "preview (X-Fit-Step); null before the first snapshot and once the job has ended.")
    stages: list[StagePublic] = Field(description="The stages the fit has gone through, in order.")
    history: HistoryPublic | None = Field(
        description="The loss and metric curve; null in job lists (read the job for it) and "
        "until a worker takes the job.")
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
        min_length=1, description="Points (N, d) in the model's input frame: "
        + ", ".join(f"{kind.coordinates} for {kind.name}" for kind in kinds().values())
        + f"; any point within +-{COORD_LIMIT:g} is answered (outside the frame, by extrapolation).",
    )


class QueryPublic(BaseModel):
    values: list[list[float]] = Field(description="The model's output at each point (N, C).")
    experts: list[int] = Field(description="The expert each point was routed to (N,).")


def job_urls(job_id: str, kind: str) -> dict[str, str]:
    base = f"/v1/jobs/{job_id}"
    outputs = kinds()[kind].outputs if kind in kinds() else {}
    actions = ["events", "cancel", "input", "metrics", "weights", "query", *outputs]
    return {"self": base, **{name: f"{base}/{name}" for name in actions}}


def job_public(job: Job, with_history: bool = True) -> JobPublic:
    """The job as the API shows it; `with_history` False leaves out the curve (job lists)."""
    kind = kinds().get(job.kind)
    progress = None
    if job.progress is not None:
        progress = ProgressPublic(**job.progress, metric_name=kind.metric_name if kind else "metric")
        if job.status in FINISHED:  # nothing is left to wait for, whatever the last report said
            progress.eta_s = None
    history = HistoryPublic(**job.history) if with_history and job.history else None
    return JobPublic(
        id=job.id, kind=job.kind, status=Status(job.status), filename=job.filename,
        options=JobCreate(**job.options), progress=progress, metrics=job.metrics,
        error=JobErrorPublic(**job.error) if job.error else None, attempts=job.attempts,
        resumed_from_step=job.resumed_from_step, snapshot_step=job.snapshot_step,
        stages=stages_public(job), history=history, cancel_requested=job.cancel_requested,
        created_at=job.created_at, updated_at=job.updated_at, started_at=job.started_at,
        finished_at=job.finished_at,
        urls=job_urls(job.id, job.kind), webhook=webhook_public(job),
    )


def stages_public(job: Job) -> list[StagePublic]:
    """The job's stages with their time so far; a stage still open when the job ended (a
    cancel, a failure, a lost worker) ends with it."""
    until = job.finished_at or utcnow()
    stages = []
    for item in job.stages or []:
        stage = StagePublic(name=item["name"], started_at=item["started_at"],
                            ended_at=item["ended_at"], elapsed_s=0.0)
        end = stage.ended_at or until
        stage.elapsed_s = max(0.0, (end - stage.started_at).total_seconds())
        stages.append(stage)
    return stages


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
