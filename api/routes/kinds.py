"""The signal kinds the service reads, with their formats and outputs, from model.signals' registry:
the page labels jobs, guesses an upload's kind, estimates its run time, picks each result's view
and says when a result is poor from this, so a new kind needs no edit here (nor in the page's
scripts, but for its view module). Open without an API key, as /openapi.json is, which says the
same."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from model.signals import Option, Output, SignalKind, kinds
from model.signals.base import PoorResult

router = APIRouter(prefix="/v1/kinds", tags=["kinds"])  # open: see api.auth

TYPE_NAMES: dict[type, Literal["string", "integer", "number", "boolean"]] = {
    str: "string", int: "integer", float: "number", bool: "boolean"}


class RenderOptionPublic(BaseModel):
    name: str = Field(description="The output's query parameter.")
    type: Literal["string", "integer", "number", "boolean"]
    description: str
    minimum: int | None
    choices: list[str] = Field(description="The values allowed; empty: any of `type`.")


class OutputPublic(BaseModel):
    name: str = Field(description="GET /v1/jobs/{id}/{name}, also in a job's `urls`.")
    summary: str
    media_types: list[str]
    options: list[RenderOptionPublic]


class PoorResultPublic(BaseModel):
    metric: str = Field(description="A key of the job's `metrics`.")
    below: float = Field(description="A succeeded job whose metric is under this failed to fit.")
    problem: str = Field(description="What went wrong, as a sentence's start.")
    advice: str = Field(description="What the result looks like and what to try.")


class KindPublic(BaseModel):
    name: str = Field(description="A job's `kind`.")
    label: str = Field(description="What a person calls it.")
    description: str
    suffixes: list[str] = Field(description="The file extensions it reads (content decides).")
    media_family: str | None = Field(
        description="The top-level media type its files are declared as (`image` for image/png); "
                    "null: a declared type says nothing of this kind.")
    cpu_step_s: float = Field(
        description="Seconds per training step of the fast preset on a 2-core CPU worker, for "
                    "estimating a fit's run time.")
    poor_results: list[PoorResultPublic] = Field(
        description="Final metrics under which a succeeded fit is too poor to keep.")
    outputs: list[OutputPublic]


def option_public(option: Option) -> RenderOptionPublic:
    return RenderOptionPublic(name=option.name, type=TYPE_NAMES[option.type],
                              description=option.description, minimum=option.minimum,
                              choices=list(option.choices))


def output_public(name: str, output: Output) -> OutputPublic:
    return OutputPublic(name=name, summary=output.summary, media_types=list(output.media_types),
                        options=[option_public(option) for option in output.options])


def poor_result_public(rule: PoorResult) -> PoorResultPublic:
    return PoorResultPublic(metric=rule.metric, below=rule.below, problem=rule.problem,
                            advice=rule.advice)


def kind_public(kind: SignalKind) -> KindPublic:
    return KindPublic(name=kind.name, label=kind.label, description=kind.description,
                      suffixes=list(kind.suffixes), media_family=kind.media_family,
                      cpu_step_s=kind.cpu_step_s,
                      poor_results=[poor_result_public(rule) for rule in kind.poor_results],
                      outputs=[output_public(name, output) for name, output in kind.outputs.items()])


@router.get("", summary="The signal kinds: the files each reads and the outputs it renders")
def list_kinds() -> list[KindPublic]:
    return [kind_public(kind) for kind in kinds().values()]
