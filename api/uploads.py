"""Uploads: spooled to the data disk, sniffed by content, validated by loading the signal.

The body cap (api.middleware) has bounded the bytes already; here the content is checked the way
the worker will read it, with the service's caps, so a bad input is refused with a 4xx before a
job exists, and the job's kind is known when the API answers 202.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fastapi import UploadFile

from api.errors import ContentTypeMismatch, InvalidOption, InvalidUpload, OverLimit
from api.schemas import JobCreate
from model.options import FitOptions
from model.presets import model_config, preset
from model.signals import Signal, SignalError, identify, kinds
from service.settings import Settings

COPY_CHUNK = 1 << 20
SAFE_SUFFIX = re.compile(r"\.[a-z0-9]{1,8}")
UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

# SignalError codes that are not 422: over a cap is "too large", an unknown format "unsupported".
SIGNAL_STATUS = {"too_large": 413, "too_long": 413, "unsupported_type": 415}
SIGNAL_TITLES = {
    413: "The signal is over the service's size cap",
    415: "Unknown file type",
    422: "The upload is not a usable signal",
}


@dataclass(frozen=True)
class Spooled:
    path: Path
    """In a folder of its own, under the client's file name (made safe): errors name the file."""
    filename: str
    declared_type: str
    sha256: str

    def fingerprint(self, options: JobCreate) -> str:
        """Identifies the request, for Idempotency-Key replays: the bytes and the options."""
        spec = json.dumps(options.model_dump(), sort_keys=True)
        return hashlib.sha256(f"{self.sha256}\n{spec}".encode()).hexdigest()

    def remove(self) -> None:
        shutil.rmtree(self.path.parent, ignore_errors=True)


def safe_name(filename: str) -> str:
    """A name that is one plain path component, keeping the extension (a sniffing fallback)."""
    path = Path(filename)
    stem = UNSAFE.sub("_", path.stem).lstrip(".")[:100] or "upload"
    suffix = path.suffix.lower() if SAFE_SUFFIX.fullmatch(path.suffix.lower()) else ""
    return stem + suffix


def spool(file: UploadFile, scratch: Path) -> Spooled:
    """Copy the upload to a file of its own: loaders take paths."""
    scratch.mkdir(parents=True, exist_ok=True)
    filename = (file.filename or "upload")[-255:]
    path = Path(tempfile.mkdtemp(dir=scratch, prefix="upload-")) / safe_name(filename)
    digest = hashlib.sha256()
    try:
        with path.open("wb") as out:
            while chunk := file.file.read(COPY_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        shutil.rmtree(path.parent, ignore_errors=True)
        raise
    return Spooled(path, filename, file.content_type or "", digest.hexdigest())


def validate(upload: Spooled, options: JobCreate, settings: Settings) -> tuple[str, str]:
    """The upload's kind and the suffix its content goes by (the stored input's, whatever the
    client named it), once its content and the options are known to be usable."""
    try:
        kind, suffix = identify(upload.path)
        check_declared_type(upload, kind.name)
        signal = kind.load(upload.path, protocol=options.protocol, **settings.loader_options(kind.name))
    except SignalError as e:
        status = SIGNAL_STATUS.get(e.code, 422)
        # Some messages carry the whole path: the client needs only its file's name.
        detail = e.detail.replace(str(upload.path), upload.path.name)
        raise InvalidUpload(detail, status=status, code=e.code, title=SIGNAL_TITLES[status]) from e
    check_options(options, signal, settings)
    return kind.name, suffix


def declared_kind(declared_type: str) -> str | None:
    """The kind whose media family (image/*...) a client declared its upload as; None for the
    families no kind claims (application/octet-stream...), which say nothing."""
    family = declared_type.split("/", 1)[0].strip().lower()
    return next((k.name for k in kinds().values() if k.media_family == family), None)


def check_declared_type(upload: Spooled, kind: str) -> None:
    declared = declared_kind(upload.declared_type)
    if declared is not None and declared != kind:
        raise ContentTypeMismatch(
            f"{upload.filename} was sent as {upload.declared_type}, but its content is "
            f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} file"
        )


def check_options(options: JobCreate, signal: Signal, settings: Settings) -> None:
    """The checks fit() would make at the worker, made now, against the loaded signal."""
    if options.steps is not None and options.steps > settings.max_steps:
        raise OverLimit(f"steps={options.steps} is over the cap of {settings.max_steps} "
                        "(NEXP_MAX_STEPS)")
    if options.time_budget_s is not None and options.time_budget_s > settings.time_limit_s:
        raise InvalidOption(f"time_budget_s={options.time_budget_s:g} is over the service's time "
                            f"limit of {settings.time_limit_s} s (NEXP_TIME_LIMIT_S)")
    try:
        fit_options = FitOptions(**options.fit_options())
        preset(options.preset)
        config = model_config(options.model, signal.task, signal.in_dim, signal.out_dim,
                              options.activation, options.experts)
        fit_options.check_for(signal, config)
    except ValueError as e:
        raise InvalidOption(str(e)) from e
