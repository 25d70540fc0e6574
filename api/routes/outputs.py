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
from model.signals import kinds
from model.signals.sdf import MESH_RESOLUTION
from service.jobs import Job, Status
from service.settings import Settings
from service.storage import ArtifactNotFound, checkpoint_key

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["outputs"])

ERRORS = problems(404, 409, 422)


def media(description: str, *types: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"description": description, "content": {t: {} for t in types}}, **ERRORS}


def render_media(description: str, *types: str) -> dict[int | str, dict[str, Any]]:
    return {**media(description, *types), **problems(429, 503)}


Width = Annotated[int | None, Query(ge=1, description="image: pixels across (default: the input's)")]
Height = Annotated[int | None, Query(ge=1, description="image: pixels down (default: the input's)")]
SampleRate = Annotated[int | None, Query(ge=1, description="audio: Hz (default: the input's)")]


@router.get("/reconstruction", response_class=Response,
            responses=render_media("The signal as the model holds it", "image/png", "audio/wav"),
            summary="Image (PNG, any size) or audio (WAV, any sample rate)")
async def reconstruction(
    job: JobDep, request: Request, owner: OwnerDep, renderer: RendererDep, settings: SettingsDep,
    width: Width = None, height: Height = None, sample_rate: SampleRate = None,
    encoding: Annotated[Literal["pcm16", "float32"] | None, Query(description="audio only")] = None,
) -> Response:
    query = {"width": width, "height": height, "sample_rate": sample_rate, "encoding": encoding}
    return await render(job, "reconstruction", query, request, owner, renderer, settings)


@router.get("/experts", response_class=Response,
            responses=render_media("Which expert owns each pixel or sample", "image/png",
                                   "application/json"),
            summary="Expert map: image PNG; audio per-sample ids as JSON, or a PNG plot")
async def experts(
    job: JobDep, request: Request, owner: OwnerDep, renderer: RendererDep, settings: SettingsDep,
    width: Width = None, height: Height = None, sample_rate: SampleRate = None,
    format: Annotated[Literal["json", "png"] | None, Query(description="audio only")] = None,
) -> Response:
    query = {"width": width, "height": height, "sample_rate": sample_rate, "format": format}
    return await render(job, "experts", query, request, owner, renderer, settings)


@router.get("/mesh", response_class=Response,
            responses=render_media("The surface by marching cubes", "application/octet-stream",
                                   "model/obj", "model/gltf-binary"),
            summary="SDF jobs: the zero level set as PLY, OBJ or GLB")
async def mesh(
    job: JobDep, request: Request, owner: OwnerDep, renderer: RendererDep, settings: SettingsDep,
    resolution: Annotated[int | None, Query(ge=2, description="grid cells a side")] = None,
    format: Annotated[Literal["ply", "obj", "glb"] | None, Query()] = None,
    experts: Annotated[bool | None, Query(description="colour vertices by expert")] = None,
    original_frame: Annotated[bool | None, Query(description="the input's coordinates")] = None,
) -> Response:
    if resolution is None:  # the renderer's default would bypass the cap: never more than it
        resolution = min(MESH_RESOLUTION, settings.max_mesh_resolution)
    query = {"resolution": resolution, "format": format, "experts": experts,
             "original_frame": original_frame}
    return await render(job, "mesh", query, request, owner, renderer, settings)


async def render(job: Job, output: str, query: dict[str, Any], request: Request,
                 owner: str | None, renderer: Renderer, settings: Settings) -> Response:
    """Check the job, the output and the query against the kind and the caps, then render for
    as long as the client waits."""
    kind = kinds()[job.kind]
    if output not in kind.outputs:
        raise OutputNotAvailable(f"{job.kind} jobs have no {output}; they offer "
                                 f"{', '.join(kind.outputs)}")
    step = await run_in_threadpool(preview_step, job, renderer)
    query = {name: value for name, value in query.items() if value is not None}
    accepted = list(inspect.signature(kind.outputs[output]).parameters)[2:]  # after model, meta
    unknown = sorted(query.keys() - set(accepted))
    if unknown:
        raise InvalidOption(f"{', '.join(unknown)} does not apply to the {output} of {job.kind} "
                            f"jobs (options: {', '.join(accepted)})")

    async def checked_render() -> tuple[Rendered, int | None]:
        with renderer.admit(owner):
            loaded = await load(renderer, job.id, step)
            check_caps(query, loaded.meta, settings)
            try:
                return await renderer.render(job.id, output, query, step), loaded.step
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


def check_caps(query: dict[str, Any], meta: dict[str, Any], settings: Settings) -> None:
    # An image's own size too: the cap is what renders within the time limit (service.settings).
    if "width" in meta:
        pixels = query.get("width", meta["width"]) * query.get("height", meta["height"])
        if pixels > settings.max_render_pixels:
            raise OverLimit(f"{pixels:,} pixels is over the cap of {settings.max_render_pixels:,} "
                            "(NEXP_MAX_RENDER_PIXELS)")
    if query.get("sample_rate", 0) > settings.max_sample_rate:
        raise OverLimit(f"sample_rate={query['sample_rate']} is over the cap of "
                        f"{settings.max_sample_rate} (NEXP_MAX_SAMPLE_RATE)")
    if query.get("resolution", 0) > settings.max_mesh_resolution:
        raise OverLimit(f"resolution={query['resolution']} is over the cap of "
                        f"{settings.max_mesh_resolution} (NEXP_MAX_MESH_RESOLUTION)")


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


# Inputs are stored under the suffix of their content's format (api.uploads), and served as these
# types, else as bytes to save: never as a type a browser would run.
INPUT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
               ".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg"}


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
    same = name.lower().endswith(suffix) or (suffix == ".jpg" and name.lower().endswith(".jpeg"))
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
