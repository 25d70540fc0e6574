"""What a succeeded job's model holds: renders, metrics, weights, raw coordinate queries; and
the upload itself, kept for as long as the job.

Renders come from the saved checkpoint and run in threads of their own (api.rendering), so a slow
render never stalls the event loop that answers polls and uploads. While a job runs, renders and
queries come from its fit's latest snapshot instead: a preview, marked by `X-Fit-Preview: true`
and the snapshot's `X-Fit-Step`.
"""

from __future__ import annotations

import inspect
import io
import zipfile
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

import torch
from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from pydantic_core import to_json

from api.deps import JobDep, OwnerDep, RendererDep, SettingsDep, StorageDep
from api.disposition import content_disposition
from api.errors import InvalidOption, JobNotReady, OutputNotAvailable, OverLimit, problems
from api.rendering import Loaded, Renderer, unless_disconnected
from api.schemas import QueryCreate, QueryPublic
from model.checkpoint import CONFIG, METRICS, WEIGHTS
from model.render import Rendered
from model.signals import Option, Output, SignalKind, kinds
from service.jobs import Job, Status
from service.settings import Settings
from service.storage import ArtifactNotFound, checkpoint_key

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["outputs"])

ERRORS = problems(404, 409, 422)


def media(description: str, *types: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"description": description, "content": {t: {} for t in types}}, **ERRORS}


def render_media(description: str, *types: str) -> dict[int | str, dict[str, Any]]:
    return {**media(description, *types), **problems(429, 503)}


# Every kind's outputs get one route each, GET /v1/jobs/{id}/{output}, whose query parameters
# are the options the kinds declare for it (model/signals/*.py): a new kind needs no edit here.


def output_names() -> list[str]:
    """Every output some kind offers, in the registry's order."""
    return list(dict.fromkeys(name for kind in kinds().values() for name in kind.outputs))


def offering(output: str) -> list[tuple[SignalKind, Output]]:
    return [(kind, kind.outputs[output]) for kind in kinds().values() if output in kind.outputs]


def query_parameter(name: str, declared: list[tuple[str, Option]]) -> inspect.Parameter:
    """The query parameter of an option, as each kind declaring it (kind name, option) says."""
    types = {option.type for _, option in declared}
    assert len(types) == 1, f"option {name} has types {types} across kinds: give it one"
    choices = tuple(dict.fromkeys(c for _, option in declared for c in option.choices))
    value_type: Any = Literal[choices] if choices else types.pop()
    minima = [option.minimum for _, option in declared if option.minimum is not None]
    query = Query(ge=min(minima) if len(minima) == len(declared) else None,  # what all kinds take
                  description="; ".join(f"{kind}: {option.description}" for kind, option in declared))
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[value_type | None, query])


REQUEST = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation)
           for name, annotation in (("job", JobDep), ("request", Request), ("owner", OwnerDep),
                                    ("renderer", RendererDep), ("settings", SettingsDep))]


def add_output_route(output: str) -> None:
    offered = offering(output)
    declared: dict[str, list[tuple[str, Option]]] = {}
    for kind, spec in offered:
        for option in spec.options:
            declared.setdefault(option.name, []).append((kind.name, option))

    async def endpoint(job: Job, request: Request, owner: str | None, renderer: Renderer,
                       settings: Settings, **query: Any) -> Response:
        return await render(job, output, query, request, owner, renderer, settings)

    # FastAPI reads the parameters from the signature: the declared options become the query.
    endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [*REQUEST, *(query_parameter(name, options) for name, options in declared.items())])
    summary = "; ".join(f"{kind.name}: {spec.summary}" for kind, spec in offered)
    media_types = dict.fromkeys(t for _, spec in offered for t in spec.media_types)
    router.add_api_route(f"/{output}", endpoint, methods=["GET"], name=output,
                         response_class=Response, responses=render_media(summary, *media_types),
                         summary=summary)


for _output in output_names():
    add_output_route(_output)


async def render(job: Job, output: str, query: dict[str, Any], request: Request,
                 owner: str | None, renderer: Renderer, settings: Settings) -> Response:
    """Check the job, the output and the query against the kind and the caps, then render for
    as long as the client waits."""
    kind = kinds()[job.kind]
    if output not in kind.outputs:
        raise OutputNotAvailable(f"{job.kind} jobs have no {output}; they offer "
                                 f"{', '.join(kind.outputs)}")
    spec = kind.outputs[output]
    step = await run_in_threadpool(preview_step, job, renderer)
    query = {name: value for name, value in query.items() if value is not None}
    accepted = [option.name for option in spec.options]
    unknown = sorted(query.keys() - set(accepted))
    if unknown:
        raise InvalidOption(f"{', '.join(unknown)} does not apply to the {output} of {job.kind} "
                            f"jobs (options: {', '.join(accepted)})")
    query = {**capped_defaults(spec, settings), **query}

    async def checked_render() -> tuple[Rendered, int | None]:
        with renderer.admit(owner):
            loaded = await load(renderer, job.id, step)
            sized = shrunk_defaults(query, loaded.meta, kind, settings)
            check_caps(sized, loaded.meta, kind, spec, settings)
            try:
                return await renderer.render(job.id, output, sized, step), loaded.step
            except ValueError as e:
                raise InvalidOption(str(e)) from e

    rendered, rendered_step = await unless_disconnected(request, checked_render())
    filename = f"{job.id}-{output}{rendered.suffix}"
    return Response(rendered.data, media_type=rendered.media_type,
                    headers={"Content-Disposition": f'inline; filename="{filename}"',
                             **preview_headers(rendered_step)})


def preview_step(job: Job, renderer: Renderer) -> int | None:
    """The snapshot step a running job's outputs come from; None for a succeeded job's
    checkpoint. JobNotReady when there is neither."""
    if job.status == Status.RUNNING:
        step = renderer.snapshot_step(job.id)
        if step is None:
            raise JobNotReady(f"job {job.id} is running and has stored no snapshot yet; previews "
                              "start with its first (every NEXP_SNAPSHOT_EVERY_S)")
        return step
    require_succeeded(job)
    return None


async def load(renderer: Renderer, job_id: str, step: int | None) -> Loaded:
    try:
        return await renderer.load(job_id, step)
    except ArtifactNotFound as e:
        if step is None:
            raise
        # The fit ended between reading the step and the snapshot, which went with it.
        raise JobNotReady(f"job {job_id} finished as its preview was asked for; ask again for "
                          "its outputs") from e


def preview_headers(step: int | None) -> dict[str, str]:
    return {} if step is None else {"X-Fit-Step": str(step), "X-Fit-Preview": "true"}


def capped_defaults(spec: Output, settings: Settings) -> dict[str, Any]:
    """For each capped option, the renderer's own default or the cap, whichever is lower: a
    default left to the renderer would bypass the cap (a 256^3 mesh under a cap of 32)."""
    defaults = inspect.signature(spec.render).parameters
    return {option.name: min(default, settings.cap(option.cap)) for option in spec.options
            if option.cap is not None
            and isinstance(default := defaults[option.name].default, int | float)}


def shrunk_defaults(query: dict[str, Any], meta: dict[str, Any], kind: SignalKind,
                    settings: Settings) -> dict[str, Any]:
    """The query with what its client left out chosen within the kind's whole-render caps (an
    image's own size, scaled down), as capped_defaults does for capped options."""
    for cap in kind.caps:
        if cap.shrink is not None:
            query = cap.shrink(query, meta, settings.cap(cap.setting))
    return query


def check_caps(query: dict[str, Any], meta: dict[str, Any], kind: SignalKind, spec: Output,
               settings: Settings) -> None:
    """The kind's render caps: its options' (sample_rate...) and its whole-render measures (an
    image's pixels: the cap is what renders within the time limit)."""
    sizes = [(query[o.name], f"{o.name}={query[o.name]}", kind.cap(o.cap)) for o in spec.options
             if o.cap is not None and o.name in query]
    sizes += [(*cap.measure(query, meta), cap) for cap in kind.caps if cap.measure is not None]
    for size, said, cap in sizes:
        limit = settings.cap(cap.setting)
        if size > limit:
            raise OverLimit(f"{said} is over the cap of {limit:,} (NEXP_{cap.setting.upper()})")


def require_succeeded(job: Job) -> None:
    if job.status != Status.SUCCEEDED:
        raise JobNotReady(f"job {job.id} is {job.status}; outputs exist once it has succeeded")


@router.get("/metrics", responses=ERRORS, summary="The final metrics (PSNR, SSIM, MSE, IoU...)")
def metrics(job: JobDep) -> dict[str, float | str | None]:
    """metrics.json: numbers, and `stop_reason` (steps, budget or target), the one string."""
    require_succeeded(job)
    return job.metrics or {}


@router.get("/weights", response_class=Response,
            responses=media("model.safetensors, config.json and metrics.json", "application/zip"),
            summary="The checkpoint: safetensors weights + JSON config, as a zip")
def weights(job: JobDep, storage: StorageDep) -> Response:
    """Unzipped, the folder loads with model.checkpoint.load_checkpoint (no pickle anywhere)."""
    require_succeeded(job)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # weights barely compress
        for name in (WEIGHTS, CONFIG, METRICS):
            archive.writestr(name, storage.get(checkpoint_key(job.id, name)))
    return Response(buffer.getvalue(), media_type="application/zip",
                    headers={"Content-Disposition": content_disposition("attachment", f"{job.id}.zip")})


# Inputs are stored under the suffix of their content's format (api.uploads), and served as the
# types their kinds declare, else as bytes to save: never as a type a browser would run.
INPUT_TYPES = {suffix: media_type for kind in kinds().values()
               for suffix, media_type in kind.media_types.items()}


@router.get("/input", response_class=Response,
            responses=media("The uploaded file, byte for byte", *sorted(set(INPUT_TYPES.values())),
                            "application/octet-stream"),
            summary="The upload, as it was sent (any status)")
def upload(job: JobDep, storage: StorageDep) -> Response:
    data = storage.get(job.input_key)  # written before the job's row, deleted after it
    suffix = PurePosixPath(job.input_key).suffix
    media_type = INPUT_TYPES.get(suffix, "application/octet-stream")
    return Response(data, media_type=media_type, headers={
        "Content-Disposition": content_disposition("attachment", download_name(job.filename, suffix)),
    })


def download_name(filename: str, suffix: str) -> str:
    """The client's name for its upload, with the suffix of what the file holds: a JPEG sent as
    photo.html downloads as photo.jpg."""
    name = PurePosixPath(filename.replace("\\", "/")).name
    own = PurePosixPath(name).suffix.lower()
    same = own == suffix or INPUT_TYPES.get(own, "") == INPUT_TYPES.get(suffix)  # .jpeg for .jpg
    return name if same else f"{PurePosixPath(name).stem or 'input'}{suffix}"


# The body is read here, after the job is known to exist and to have succeeded (FastAPI reads a
# declared body before any dependency runs: an unknown job would pay for the parse), capped by
# api.middleware from the point cap. Parsing, inference and the answer's JSON run in worker
# threads (pydantic's JSON parser lets go of the GIL): with the largest query allowed in flight,
# the event loop still answers /healthz within milliseconds.
QUERY_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": QueryCreate.model_json_schema()}}}}


@router.post("/query", response_model=QueryPublic, responses=problems(404, 409, 413, 422),
             openapi_extra=QUERY_BODY, summary="The model's values and experts at coordinates")
async def query(job: JobDep, request: Request, renderer: RendererDep,
                settings: SettingsDep) -> Response:
    step = await run_in_threadpool(preview_step, job, renderer)
    loaded = await load(renderer, job.id, step)
    body = await request.body()
    coords = await run_in_threadpool(parse_query, body, loaded.model.config.in_dim, job.kind,
                                     settings.max_query_points)
    values, ids = await renderer.query(job.id, coords, step)
    return Response(await run_in_threadpool(answer_json, values, ids), media_type="application/json",
                    headers=preview_headers(loaded.step))


# Points converted at once between lists and tensors, or serialised: each such call holds the
# GIL, so the event loop, for as long as it runs (0.1 s for 100,000 points in one call).
PIECE = 8192


def pieces(n: int) -> range:
    return range(0, n, PIECE)


def answer_json(values: torch.Tensor, experts: torch.Tensor) -> bytes:
    """QueryPublic's JSON, written a piece at a time."""
    def array(items: torch.Tensor) -> bytes:
        return b"[" + b",".join(to_json(items[i:i + PIECE].tolist())[1:-1] for i in pieces(len(items))) + b"]"

    return b'{"values":' + array(values) + b',"experts":' + array(experts) + b"}"


def parse_query(body: bytes, in_dim: int, kind: str, max_points: int) -> torch.Tensor:
    try:
        coords = QueryCreate.model_validate_json(body).coords
    except ValidationError as e:  # answered like any other body FastAPI validates
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])}
                                      for error in e.errors()]) from e
    if len(coords) > max_points:
        raise OverLimit(f"{len(coords):,} points is over the cap of {max_points:,} "
                        "(NEXP_MAX_QUERY_POINTS)")
    if any(len(point) != in_dim for point in coords):
        raise InvalidOption(f"{kind} models take {in_dim} coordinates per point")
    return torch.cat([torch.tensor(coords[i:i + PIECE], dtype=torch.float32) for i in pieces(len(coords))])
