"""What a succeeded job's model holds: renders, metrics, weights, raw coordinate queries; and
the upload itself, kept for as long as the job.

Renders come from the saved checkpoint and run in threads of their own (api.rendering), so a slow
render never stalls the event loop that answers polls and uploads.
"""

from __future__ import annotations

import inspect
import io
import zipfile
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Response

from api.deps import JobDep, RendererDep, SettingsDep, StorageDep
from api.errors import InvalidOption, JobNotReady, OutputNotAvailable, OverLimit, problems
from api.rendering import Renderer
from api.schemas import QueryCreate, QueryPublic
from model.checkpoint import CONFIG, METRICS, WEIGHTS
from model.signals import kinds
from model.signals.sdf import MESH_RESOLUTION
from worker.jobs import Job, Status
from worker.settings import Settings
from worker.storage import checkpoint_key

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["outputs"])

ERRORS = problems(404, 409, 422)


def media(description: str, *types: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"description": description, "content": {t: {} for t in types}}, **ERRORS}


Width = Annotated[int | None, Query(ge=1, description="image: pixels across (default: the input's)")]
Height = Annotated[int | None, Query(ge=1, description="image: pixels down (default: the input's)")]
SampleRate = Annotated[int | None, Query(ge=1, description="audio: Hz (default: the input's)")]


@router.get("/reconstruction", response_class=Response,
            responses=media("The signal as the model holds it", "image/png", "audio/wav"),
            summary="Image (PNG, any size) or audio (WAV, any sample rate)")
async def reconstruction(
    job: JobDep, renderer: RendererDep, settings: SettingsDep, width: Width = None,
    height: Height = None, sample_rate: SampleRate = None,
    encoding: Annotated[Literal["pcm16", "float32"] | None, Query(description="audio only")] = None,
) -> Response:
    query = {"width": width, "height": height, "sample_rate": sample_rate, "encoding": encoding}
    return await render(job, "reconstruction", query, renderer, settings)


@router.get("/experts", response_class=Response,
            responses=media("Which expert owns each pixel or sample", "image/png",
                            "application/json"),
            summary="Expert map: image PNG; audio per-sample ids as JSON, or a PNG plot")
async def experts(
    job: JobDep, renderer: RendererDep, settings: SettingsDep, width: Width = None,
    height: Height = None, sample_rate: SampleRate = None,
    format: Annotated[Literal["json", "png"] | None, Query(description="audio only")] = None,
) -> Response:
    query = {"width": width, "height": height, "sample_rate": sample_rate, "format": format}
    return await render(job, "experts", query, renderer, settings)


@router.get("/mesh", response_class=Response,
            responses=media("The surface by marching cubes", "application/octet-stream",
                            "model/obj", "model/gltf-binary"),
            summary="SDF jobs: the zero level set as PLY, OBJ or GLB")
async def mesh(
    job: JobDep, renderer: RendererDep, settings: SettingsDep,
    resolution: Annotated[int | None, Query(ge=2, description="grid cells a side")] = None,
    format: Annotated[Literal["ply", "obj", "glb"] | None, Query()] = None,
    experts: Annotated[bool | None, Query(description="colour vertices by expert")] = None,
    original_frame: Annotated[bool | None, Query(description="the input's coordinates")] = None,
) -> Response:
    if resolution is None:  # the renderer's default would bypass the cap: never more than it
        resolution = min(MESH_RESOLUTION, settings.max_mesh_resolution)
    query = {"resolution": resolution, "format": format, "experts": experts,
             "original_frame": original_frame}
    return await render(job, "mesh", query, renderer, settings)


async def render(job: Job, output: str, query: dict[str, Any], renderer: Renderer,
                 settings: Settings) -> Response:
    """Check the job, the output and the query against the kind and the caps, then render."""
    kind = kinds()[job.kind]
    if output not in kind.outputs:
        raise OutputNotAvailable(f"{job.kind} jobs have no {output}; they offer "
                                 f"{', '.join(kind.outputs)}")
    require_succeeded(job)
    query = {name: value for name, value in query.items() if value is not None}
    accepted = list(inspect.signature(kind.outputs[output]).parameters)[2:]  # after model, meta
    unknown = sorted(query.keys() - set(accepted))
    if unknown:
        raise InvalidOption(f"{', '.join(unknown)} does not apply to the {output} of {job.kind} "
                            f"jobs (options: {', '.join(accepted)})")
    check_caps(query, (await renderer.load(job.id)).meta, settings)
    try:
        rendered = await renderer.render(job.id, output, query)
    except ValueError as e:
        raise InvalidOption(str(e)) from e
    filename = f"{job.id}-{output}{rendered.suffix}"
    return Response(rendered.data, media_type=rendered.media_type,
                    headers={"Content-Disposition": f'inline; filename="{filename}"'})


def check_caps(query: dict[str, Any], meta: dict[str, Any], settings: Settings) -> None:
    if "width" in query or "height" in query:
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
def metrics(job: JobDep) -> dict[str, float | None]:
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
                    headers={"Content-Disposition": f'attachment; filename="{job.id}.zip"'})


# Uploads served by their suffix as these types, else as bytes to save: never as a type a browser
# would run (an upload named .html is sniffed by content, stored as input.html, served as bytes).
INPUT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
               ".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg"}


@router.get("/input", response_class=Response,
            responses=media("The uploaded file, byte for byte", *sorted(set(INPUT_TYPES.values())),
                            "application/octet-stream"),
            summary="The upload, as it was sent (any status)")
def upload(job: JobDep, storage: StorageDep) -> Response:
    data = storage.get(job.input_key)  # written before the job's row, deleted after it
    media_type = INPUT_TYPES.get(PurePosixPath(job.input_key).suffix, "application/octet-stream")
    return Response(data, media_type=media_type, headers={
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(job.filename)}",
        "X-Content-Type-Options": "nosniff",
    })


# 400: a body FastAPI cannot even decode as text (not UTF-8), before any validation.
@router.post("/query", responses=problems(400, 404, 409, 422),
             summary="The model's values and experts at coordinates")
async def query(job: JobDep, body: QueryCreate, renderer: RendererDep,
                settings: SettingsDep) -> QueryPublic:
    require_succeeded(job)
    if len(body.coords) > settings.max_query_points:
        raise OverLimit(f"{len(body.coords):,} points is over the cap of "
                        f"{settings.max_query_points:,} (NEXP_MAX_QUERY_POINTS)")
    in_dim = (await renderer.load(job.id)).model.config.in_dim
    if any(len(point) != in_dim for point in body.coords):
        raise InvalidOption(f"{job.kind} models take {in_dim} coordinates per point")
    values, ids = await renderer.query(job.id, body.coords)
    return QueryPublic(values=values, experts=ids)
