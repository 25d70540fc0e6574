"""`nexp`: fit a signal and render what the model holds, locally.

    nexp fit photo.png --out runs/photo [--preset fast|paper] [--steps N] ...
    nexp render runs/photo --width 512 --height 512 -o big.png
    nexp render runs/clip --sample-rate 16000 -o clip.wav
    nexp mesh runs/bunny --resolution 256 -o bunny.glb [--experts]

Bad input exits with status 2 and one line on stderr saying why.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from model import checkpoint
from model.fit import FitCanceled, FitDiverged, fit, resolve_device
from model.fit import Progress as FitProgress
from model.network import ACTIVATIONS
from model.options import MAX_SEED, MAX_TARGET_PSNR, MIN_TARGET_PSNR, FitOptions
from model.presets import MAX_EXPERTS, MODELS, PRESETS, PRESETS_HELP
from model.signals import SignalError, kinds, load_signal

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

DEFAULT_CACHE = Path.home() / ".cache" / "nexp"

# Choices come from the registries, so a new preset, model or activation appears here by itself.
Preset = StrEnum("Preset", {name: name for name in PRESETS})  # type: ignore[misc]
ModelName = StrEnum("ModelName", {name: name for name in MODELS})  # type: ignore[misc]
ActivationName = StrEnum("ActivationName", {name: name for name in ACTIVATIONS})  # type: ignore[misc]
Protocol = StrEnum("Protocol", {"paper": "paper"})  # type: ignore[misc]


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@app.command("fit")
def fit_command(
    input: Annotated[Path, typer.Argument(help="Image, audio clip, point cloud or mesh.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the checkpoint and outputs.")],
    preset: Annotated[Preset, typer.Option(help=PRESETS_HELP)] = Preset["fast"],  # type: ignore[valid-type]
    steps: Annotated[int | None, typer.Option(min=1, help="Override the preset's steps.")] = None,
    lr: Annotated[float | None, typer.Option(min=0.0, help="Override the preset's lr.")] = None,
    model: Annotated[ModelName, typer.Option()] = ModelName["neural-experts"],  # type: ignore[valid-type]
    experts: Annotated[int | None, typer.Option(min=2, max=MAX_EXPERTS, help="Number of experts K.")] = None,
    activation: Annotated[ActivationName, typer.Option()] = ActivationName["sine"],  # type: ignore[valid-type]
    protocol: Annotated[Protocol | None,  # type: ignore[valid-type]
        typer.Option(help="paper: Lanczos /4 + 128x128 crop.")] = None,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED)] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    compile: Annotated[bool, typer.Option(help="torch.compile the training step.")] = False,
    top_k: Annotated[int | None, typer.Option(min=1, max=MAX_EXPERTS,
        help="Train each point on its top-k experts only (default: all K, the paper's loss).")] = None,
    time_budget: Annotated[float | None, typer.Option(min=0.0,
        help="Seconds the fit may take; its schedule is laid over them.")] = None,
    target_psnr: Annotated[float | None, typer.Option(min=MIN_TARGET_PSNR, max=MAX_TARGET_PSNR,
        help="dB (images, audio): stop once the fit reaches it.")] = None,
    cache_dir: Annotated[Path, typer.Option(help="Pretrained-manager cache.")] = DEFAULT_CACHE,
) -> None:
    """Fit a Neural Experts model (or a baseline) to INPUT and write it to --out."""
    try:
        # The signal's tensors live where the fit runs.
        options = FitOptions(
            preset=preset.value, steps=steps, lr=lr, model=model.value, experts=experts,
            activation=activation.value, seed=seed, device=str(resolve_device(device)), compile=compile,
            top_k=top_k, time_budget_s=time_budget, target_psnr=target_psnr,
        )
        signal = load_signal(input, protocol=protocol.value if protocol else None, device=options.device)
        with _progress_bar() as report:
            result = fit(signal, options, on_progress=report, cache_dir=cache_dir)
    except (SignalError, ValueError, FitDiverged) as e:
        fail(str(e))
    except FitCanceled as e:  # pragma: no cover - only a caller-supplied check cancels
        fail(str(e))
    checkpoint.save_checkpoint(out, result.model, result.config, result.record)
    written = kinds()[signal.kind].write_outputs(result.model, result.config["signal"], out)
    shown = ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items())
    typer.echo(f"{signal.kind}: {shown} ({result.config['parameters']:,} parameters; "
               f"stopped by {result.stop_reason})")
    typer.echo(f"wrote {out / checkpoint.WEIGHTS}, {', '.join(p.name for p in written)}")


class _progress_bar:
    """A rich progress bar on a terminal; one line per report otherwise (logs stay readable)."""

    def __enter__(self) -> Callable[[FitProgress], None]:
        self.bar: Progress | None = None
        if sys.stderr.isatty():
            self.bar = Progress(
                TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(), transient=False,
            )
            self.bar.start()
            self.task = self.bar.add_task("pretraining manager", total=None, info="")
        return self.report

    def report(self, p: FitProgress) -> None:
        info = "" if p.step == 0 else f"loss {p.loss:.4g}  metric {p.metric:.4g}"
        if self.bar is None:
            if p.step:
                typer.echo(f"step {p.step}/{p.total} {info} eta {p.eta_s:.0f}s", err=True)
            return
        self.bar.update(self.task, description=p.stage, total=p.total, completed=p.step, info=info)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _render(folder: Path, kind: str, output: str, **query: Any) -> bytes:
    try:
        model, config = checkpoint.load_checkpoint(folder)
    except (FileNotFoundError, OSError, ValueError, KeyError) as e:
        fail(f"cannot load checkpoint {folder}: {e}")
    if config["kind"] != kind:
        fail(f"{folder} holds an {config['kind']} model; this command renders {kind} models")
    try:
        rendered: bytes = kinds()[kind].outputs[output](model, config["signal"], **query).data
    except ValueError as e:
        fail(str(e))
    return rendered


def _kind_of_checkpoint(folder: Path) -> str:
    try:
        kind: str = checkpoint.read_config(folder)["kind"]
    except (FileNotFoundError, ValueError, KeyError) as e:
        fail(f"cannot load checkpoint {folder}: {e}")
    return kind


def _check_suffix(output: Path, *suffixes: str) -> None:
    """Before rendering, which can take minutes: a file's name should say what it holds."""
    if output.suffix.lower() not in suffixes:
        fail(f"{output.name}: this render writes {' or '.join(suffixes)}; name the output so")


@app.command()
def render(
    folder: Annotated[Path, typer.Argument(help="A folder written by `nexp fit`.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG for images, WAV for audio.")],
    width: Annotated[int | None, typer.Option(min=1)] = None,
    height: Annotated[int | None, typer.Option(min=1)] = None,
    sample_rate: Annotated[int | None, typer.Option(min=1)] = None,
    experts: Annotated[bool, typer.Option(help="Render the expert map instead.")] = False,
) -> None:
    """Render an image at any size or an audio clip at any sample rate."""
    kind = _kind_of_checkpoint(folder)
    name = "experts" if experts else "reconstruction"
    if kind == "image":
        if sample_rate is not None:
            fail("--sample-rate applies to audio models; this is an image model")
        _check_suffix(output, ".png")
        data = _render(folder, kind, name, width=width, height=height)
    elif kind == "audio":
        if width is not None or height is not None:
            fail("--width/--height apply to image models; this is an audio model")
        query: dict[str, Any] = {"sample_rate": sample_rate}
        if experts:
            _check_suffix(output, ".json", ".png")
            query["format"] = output.suffix.lower().lstrip(".")
        else:
            _check_suffix(output, ".wav")
        data = _render(folder, kind, name, **query)
    else:
        fail(f"{folder} holds an {kind} model: use `nexp mesh`")
    output.write_bytes(data)
    typer.echo(f"wrote {output}")


@app.command()
def mesh(
    folder: Annotated[Path, typer.Argument(help="A folder written by `nexp fit` on a 3D shape.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="out.ply, out.obj or out.glb")],
    resolution: Annotated[int, typer.Option(min=16, help="Marching-cubes grid size.")] = 256,
    experts: Annotated[bool, typer.Option(help="Colour vertices by expert.")] = False,
) -> None:
    """Extract a mesh by marching cubes."""
    fmt = output.suffix.lower().lstrip(".")
    if fmt not in ("ply", "obj", "glb"):
        fail(f"{output.name}: the mesh format comes from the extension: .ply, .obj or .glb")
    data = _render(folder, "sdf", "mesh", resolution=resolution, format=fmt, experts=experts)
    output.write_bytes(data)
    typer.echo(f"wrote {output}")


if __name__ == "__main__":
    app()
