"""What a user chooses for one fit, declared once: the CLI's options, the API's form fields and
the page's choices are built from `FitOptions` and the registries it names."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any, get_args, get_type_hints

from model.network import ACTIVATIONS, ModelConfig
from model.presets import MAX_EXPERTS, MODELS, PRESETS, PRESETS_HELP, FitPreset, preset
from model.signals import kinds
from model.signals.base import Signal
from model.signals.image import psnr

TARGET_METRICS: dict[str, Callable[[float], float]] = {
    "psnr": lambda psnr_db: psnr_db,  # images: PSNR on [0, 1] already
    "mse": lambda mse: psnr(mse, peak=1.0),  # audio: the waveform is normalised to peak 1
}
"""PSNR (dB) from a kind's progress metric, for the kinds a `target_psnr` applies to."""

MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds; databases store signed 64-bit integers
MIN_TARGET_PSNR, MAX_TARGET_PSNR = 1.0, 200.0  # float32 fits top out near 100 dB; 200 is no target


def protocols() -> tuple[str, ...]:
    """Every kind's data protocols (`SignalKind.protocols`), in registry order, read when asked:
    a kind registered after this module is imported offers its own."""
    return tuple(dict.fromkeys(p for kind in kinds().values() for p in kind.protocols))

OPTION = "option"  # the key of an `Option` in a dataclass field's metadata


@dataclass(frozen=True)
class Option:
    """How one fit option is explained and bounded, for the CLI, the API and the page alike."""

    help: str
    choices: Collection[str] | Callable[[], Collection[str]] = ()
    """A registry (PRESETS, MODELS...) or a function listing one, read when asked: what it holds
    then is what is offered."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """A person's name for a choice, where it is not the choice itself (the page shows these)."""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    unit: str = ""
    flag: str | None = None
    """The CLI's option, where it is not --field-name."""
    api: bool = True
    """False: the service decides (where and how a fit runs), so only the CLI offers it."""
    service_note: str = ""
    """What the API adds to `help` (its own caps and defaults)."""
    cli_default: Any = None
    """The CLI's default where it differs from the field's."""

    def names(self) -> tuple[str, ...]:
        return tuple(self.choices() if callable(self.choices) else self.choices)

    def out_of_bounds(self, name: str, value: float) -> str | None:
        """Why `value` is outside this option's bounds (ValueError's message), or None."""
        finite = isinstance(value, int) or math.isfinite(value)
        low_ok = (self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
        if finite and low_ok and (self.le is None or value <= self.le):
            return None
        if self.le is not None:
            return f"{name} must be {_shown(self.ge)} to {_shown(self.le)}{self.unit}, got {value}"
        lowest = f"above {_shown(self.gt)}" if self.gt is not None else f"{_shown(self.ge)} or more"
        number = "a finite number " if isinstance(value, float) else ""
        return f"{name} must be {number}{lowest}{self.unit}, got {value}"


def _shown(bound: float | None) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


def option(default: Any, **declared: Any) -> Any:
    """A dataclass field declaring its `Option` (typed Any, as dataclasses.field is)."""
    return field(default=default, metadata={OPTION: Option(**declared)})


def option_of(declared: Field[Any]) -> Option:
    found: Option = declared.metadata[OPTION]
    return found


def default_of(declared: Field[Any]) -> Any:
    """The option's default: every user option has one (`option` asks for it)."""
    return declared.default


@dataclass(frozen=True)
class FitOptions:
    """What a user chooses for one fit (the CLI's and the API's fit options)."""

    preset: str = option("fast", help=PRESETS_HELP, choices=PRESETS)
    steps: int | None = option(None, help="Training steps (default: the preset's).", ge=1)
    lr: float | None = option(None, help="Adam learning rate (default: the preset's).", gt=0)
    model: str = option("neural-experts", choices=MODELS, help=(
        "Architecture: Neural Experts (experts guided by a manager), a vanilla mixture of experts "
        "(the same without the manager's guidance), or a SIREN (one network, no experts)."),
        labels={"neural-experts": "Neural Experts", "vanilla-moe": "Vanilla MoE", "siren": "SIREN",
                "siren-wider": "SIREN (wider)"})
    experts: int | None = option(None, help="Number of experts K (default: per kind).", ge=2,
                                 le=MAX_EXPERTS)
    activation: str = option("sine", choices=ACTIVATIONS, help="The networks' nonlinearity.",
                             labels={"finer": "FINER", "softplus-ff": "softplus + Fourier features"})
    seed: int = option(0, help="Seeds the weights, pretraining and sampling.", ge=0, le=MAX_SEED)
    device: str = option("auto", help="auto, cpu, cuda, cuda:1 ...", api=False)
    compile: bool | None = option(None, help="torch.compile the training step.", api=False,
                                  cli_default=False)
    """torch.compile the training step: True, False, or None to decide from the fit's length
    (a compile costs seconds to a minute up front; see COMPILE_MIN_STEPS, COMPILE_MIN_BUDGET_S).
    Dense steps only. The CLI compiles only when asked."""
    top_k: int | None = option(None, ge=1, le=MAX_EXPERTS, help=(
        "Train each point on its top-k experts only, 1..K (default: all K, the paper's dense loss)."))
    """Experts each training point runs (1..K); None or K is the paper's dense loss. At 1 the
    manager learns from the balance term only (q renormalised over one expert is 1)."""
    time_budget_s: float | None = option(
        None, gt=0, flag="--time-budget",
        help="Seconds the fit may take (pretraining and training); its schedule is laid over them.",
        service_note=" Up to the service's time limit (default: NEXP_DEFAULT_TIME_BUDGET_S when "
        "`steps` is not set either).")
    target_psnr: float | None = option(None, ge=MIN_TARGET_PSNR, le=MAX_TARGET_PSNR, unit=" dB",
                                       help="dB, images and audio: stop once the fit reaches it.")

    def __post_init__(self) -> None:
        # One set of rules for every caller: the CLI and the API refuse what a fit would trip
        # over later (an lr of inf diverges at step 1, a 70-bit seed overflows the generator).
        for declared in fields(self):
            value = getattr(self, declared.name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                why = option_of(declared).out_of_bounds(declared.name, value)
                if why is not None:
                    raise ValueError(why)

    def check_for(self, signal: Signal, config: ModelConfig) -> None:
        """What the options alone cannot tell: top_k against this model's K, a target against
        this signal's metric. ValueError when they do not fit."""
        if self.top_k is not None and self.top_k > config.n_experts:
            raise ValueError(f"top_k must be 1 to K = {config.n_experts}, got {self.top_k}")
        if self.target_psnr is not None and kinds()[signal.kind].metric_name not in TARGET_METRICS:
            raise ValueError(f"target_psnr applies to image and audio fits, not {signal.kind}")

    def sparse_k(self, config: ModelConfig) -> int | None:
        """k when training runs each point's top k experts only; None for the dense loss."""
        return self.top_k if self.top_k is not None and self.top_k < config.n_experts else None

    def schedule(self) -> FitPreset:
        return preset(self.preset).with_overrides(self.steps, self.lr)


@dataclass(frozen=True)
class LoadOptions:
    """How the upload is read: the signal loader's options a user chooses."""

    protocol: str | None = option(None, choices=protocols, help=(
        "paper: the paper's image protocol (Lanczos downscale by 4, centre 128x128 crop)."))


def user_options() -> tuple[Field[Any], ...]:
    """Every option a user chooses for a fit, in the order the CLI and the API list them."""
    return (*fields(FitOptions), *fields(LoadOptions))


def option_types() -> dict[str, Any]:
    """Each user option's type (`int | None`...), evaluated: the fields hold it as a string."""
    return {**get_type_hints(FitOptions), **get_type_hints(LoadOptions)}


def value_type(name: str) -> type:
    """The type of option `name`'s values, None aside: str, int, float or bool."""
    hint = option_types()[name]
    found: type = next((t for t in get_args(hint) if t is not type(None)), hint)
    return found
