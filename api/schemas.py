"""Request and response bodies. Job rows never leave the API unconverted: see `job_public`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from model.network import ACTIVATIONS
from model.presets import MODELS, PRESETS, PRESETS_HELP
from model.signals import kinds
from worker.jobs import Job, Status


class JobCreate(BaseModel):
    """The fit options, sent as multipart form fields beside `file` (the CLI's options)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    preset: str = Field("fast", description=PRESETS_HELP, json_schema_extra={"enum": list(PRESETS)})
    steps: int | None = Field(None, ge=1, description="Training steps (default: the preset's).")
    lr: float | None = Field(None, gt=0, description="Adam learning rate (default: the preset's).")
    model: str = Field("neural-experts", description="Architecture.",
                       json_schema_extra={"enum": list(MODELS)})
    experts: int | None = Field(None, ge=1, description="Number of experts K (default: per kind).")
    activation: str = Field("sine", json_schema_extra={"enum": list(ACTIVATIONS)})
    protocol: str | None = Field(None, description='"paper": the paper\'s image protocol '
                                 "(Lanczos downscale by 4, centre 128x128 crop).")
    seed: int = Field(0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _options_only(cls, data: Any) -> Any:
        # FastAPI hands a form model every form field, the upload too: set that one aside, so
        # extra="forbid" still catches a misspelt option instead of silently ignoring it.
        if isinstance(data, dict):
            return {name: value for name, value in data.items() if name != "file"}
        return data


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


class JobPublic(BaseModel):
    id: str
    kind: str = Field(description="image, audio or sdf: detected from the upload's content.")
    status: Status
    filename: str
    options: JobCreate
    progress: ProgressPublic | None
    metrics: dict[str, float | None] | None
    error: JobErrorPublic | None
    attempts: int = Field(description="Deliveries to a worker so far.")
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    urls: dict[str, str] = Field(description="Where to fetch this job's outputs and actions.")


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
        cancel_requested=job.cancel_requested, created_at=job.created_at,
        updated_at=job.updated_at, started_at=job.started_at, finished_at=job.finished_at,
        urls=job_urls(job.id, job.kind),
    )
