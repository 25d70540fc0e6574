"""`nexp`: fit a signal and render what the model holds, locally.

    nexp fit photo.png --out runs/photo [--preset fast|paper] [--steps N] ...
    nexp render runs/photo --width 512 --height 512 -o big.png
    nexp render runs/clip --sample-rate 16000 -o clip.wav
    nexp mesh runs/bunny --resolution 256 -o bunny.glb [--experts]

Bad input exits with status 2 and one line on stderr saying why.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import Field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from model import checkpoint
from model.fit import FitCanceled, FitDiverged, fit, resolve_device
from model.fit import Progress as FitProgress
from model.options import FitOptions, default_of, option_of, option_types, user_options
from model.signals import Option, Output, SignalError, SignalKind, kinds, load_signal

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

DEFAULT_CACHE = Path.home() / ".cache" / "nexp"

def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _option_parameter(declared: Field[Any], hint: Any) -> inspect.Parameter:
    """A typer option for a declared fit option: its help, bounds and choices."""
    spec = option_of(declared)
    default = default_of(declared) if spec.cli_default is None else spec.cli_default
    if spec.names():
        # An enum of the registry as it is now, so a new preset, model or activation shows here.
        choices = StrEnum(declared.name.title(), {name: name for name in spec.names()})  # type: ignore[misc]
        hint = choices if default is not None else choices | None
        default = None if default is None else choices(default)
    low = spec.ge if spec.ge is not None else spec.gt  # an open bound is FitOptions' to refuse
    typer_option = typer.Option(*(spec.flag,) if spec.flag else (), help=spec.help, min=low, max=spec.le)
    return inspect.Parameter(declared.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[hint, typer_option])


def with_parameters(
    command: Callable[..., None], declared: list[inspect.Parameter]
) -> Callable[..., None]:
    """`command` (which takes **options) as typer sees it: its own parameters with `declared`
    in place of **options, before its keyword-only ones (those are listed last in --help)."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    own_options = [p for p in own if p.kind is inspect.Parameter.KEYWORD_ONLY]
    positional = [p for p in own if p not in own_options]
    command.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*positional, *declared, *own_options])
    return command


def with_fit_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give `command` (which takes **options) one CLI option per declared fit option."""
    hints = option_types()
    return with_parameters(command, [_option_parameter(f, hints[f.name]) for f in user_options()])


@app.command("fit")
@with_fit_options
def fit_command(
    input: Annotated[Path, typer.Argument(help="Image, audio clip, point cloud or mesh.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the checkpoint and outputs.")],
    *,
    cache_dir: Annotated[Path, typer.Option(help="Pretrained-manager cache.")] = DEFAULT_CACHE,
    **chosen: Any,
) -> None:
    """Fit a Neural Experts model (or a baseline) to INPUT and write it to --out."""
    values = {name: getattr(value, "value", value) for name, value in chosen.items()}  # enums
    try:
        options = FitOptions(**{f.name: values[f.name] for f in fields(FitOptions)})
        # The signal's tensors live where the fit runs.
        options = replace(options, device=str(resolve_device(options.device)))
        signal = load_signal(input, protocol=values["protocol"], device=options.device)
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
        rendered: bytes = kinds()[kind].outputs[output].render(model, config["signal"], **query).data
    except ValueError as e:
        fail(str(e))
    return rendered


def _kind_of_checkpoint(folder: Path) -> SignalKind:
    try:
        name: str = checkpoint.read_config(folder)["kind"]
    except (FileNotFoundError, ValueError, KeyError) as e:
        fail(f"cannot load checkpoint {folder}: {e}")
    if name not in kinds():
        fail(f"{folder} holds a model of kind {name!r}, which this nexp does not know")
    return kinds()[name]


def _either(names: Sequence[str]) -> str:
    """The choices as a sentence lists them: "a, b or c"."""
    return " or ".join(filter(None, (", ".join(names[:-1]), names[-1])))


def _check_suffix(output: Path, *suffixes: str) -> None:
    """Before rendering, which can take minutes: a file's name should say what it holds."""
    if output.suffix.lower() not in suffixes:
        fail(f"{output.name}: this render writes {_either(suffixes)}; name the output so")


def _from_suffix(spec: Output, output: Path) -> dict[str, str]:
    """The render options the output file's extension gives: format="glb" for bunny.glb."""
    return {o.name: output.suffix.lower().lstrip(".") for o in spec.options if o.from_suffix}


RENDERED = ("reconstruction", "experts")  # what `nexp render` writes: --experts picks the second


def render_suffixes() -> str:
    """What -o may end with, by kind: "audio: .wav .json .png; image: .png"."""
    by_kind = {kind.name: dict.fromkeys(suffix for name in RENDERED if name in kind.outputs
                                        for suffix in kind.outputs[name].suffixes)
               for kind in kinds().values()}
    return "; ".join(f"{kind}: {' '.join(suffixes)}" for kind, suffixes in by_kind.items() if suffixes)


def render_options() -> dict[str, dict[str, Option]]:
    """option name -> {kind: its declaration}: the options the kinds declare for what `nexp
    render` writes, but those the output file's extension gives (from_suffix)."""
    declared: dict[str, dict[str, Option]] = {}
    for kind in kinds().values():
        for option in (o for name in RENDERED if name in kind.outputs
                       for o in kind.outputs[name].options if o.cli and not o.from_suffix):
            declared.setdefault(option.name, {})[kind.name] = option
    return declared


def _render_parameter(name: str, by_kind: dict[str, Option]) -> inspect.Parameter:
    option = next(iter(by_kind.values()))
    help = "; ".join(f"{kind}: {o.description}" for kind, o in by_kind.items())
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        option.type | None, typer.Option(min=option.minimum, help=help)])


def with_render_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give `command` (which takes **options) one CLI option per declared render option."""
    return with_parameters(
        command, [_render_parameter(name, by_kind) for name, by_kind in render_options().items()])


@app.command()
@with_render_options
def render(
    folder: Annotated[Path, typer.Argument(help="A folder written by `nexp fit`.")],
    output: Annotated[Path, typer.Option("-o", "--output",
                                         help=f"Its extension names the format ({render_suffixes()}).")],
    experts: Annotated[bool, typer.Option(help="Render the expert map instead.")] = False,
    **options: Any,
) -> None:
    """Render what a fit holds, with its kind's options: an image at any size, an audio clip at
    any sample rate..."""
    kind = _kind_of_checkpoint(folder)
    name = RENDERED[experts]
    spec = kind.outputs.get(name)
    if spec is None:
        fail(f"{folder} holds an {kind.name} model: use `nexp {' or '.join(kind.outputs)}`")
    asked = {option: value for option, value in options.items() if value is not None}
    for option in asked:
        if spec.option(option) is None:
            owners = " or ".join(render_options()[option])
            fail(f"--{option.replace('_', '-')} applies to {owners} models; this is an "
                 f"{kind.name} model")
    _check_suffix(output, *spec.suffixes)
    output.write_bytes(_render(folder, kind.name, name, **asked, **_from_suffix(spec, output)))
    typer.echo(f"wrote {output}")


MESH = "mesh"  # the output `nexp mesh` writes


def mesh_output() -> tuple[SignalKind, Output]:
    """The kind that declares a mesh output (sdf), and that output: its suffixes are the formats
    `nexp mesh` writes, each its `format` option's choice (from_suffix)."""
    kind = next(k for k in kinds().values() if MESH in k.outputs)
    return kind, kind.outputs[MESH]


@app.command()
def mesh(
    folder: Annotated[Path, typer.Argument(help="A folder written by `nexp fit` on a 3D shape.")],
    output: Annotated[Path, typer.Option("-o", "--output", help=_either(
        [f"out{suffix}" for suffix in mesh_output()[1].suffixes]))],
    resolution: Annotated[int, typer.Option(min=16, help="Marching-cubes grid size.")] = 256,
    experts: Annotated[bool, typer.Option(help="Colour vertices by expert.")] = False,
) -> None:
    """Extract a mesh by marching cubes."""
    kind, spec = mesh_output()
    if output.suffix.lower() not in spec.suffixes:
        fail(f"{output.name}: the mesh format comes from the extension: {_either(spec.suffixes)}")
    data = _render(folder, kind.name, MESH, resolution=resolution, experts=experts,
                   **_from_suffix(spec, output))
    output.write_bytes(data)
    typer.echo(f"wrote {output}")


if __name__ == "__main__":
    app()
