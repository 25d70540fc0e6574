"""The signal kinds the service reads, with their formats and outputs, from model.signals' registry:
the page labels jobs and picks each result's view from this, so a new kind needs no edit here.
Open without an API key, as /openapi.json is, which says the same."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from model.signals import Option, Output, SignalKind, kinds

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


class KindPublic(BaseModel):
    name: str = Field(description="A job's `kind`.")
    label: str = Field(description="What a person calls it.")
    description: str
    suffixes: list[str] = Field(description="The file extensions it reads (content decides).")
    outputs: list[OutputPublic]


def option_public(option: Option) -> RenderOptionPublic:
    return RenderOptionPublic(name=option.name, type=TYPE_NAMES[option.type],
                              description=option.description, minimum=option.minimum,
                              choices=list(option.choices))


def output_public(name: str, output: Output) -> OutputPublic:
    return OutputPublic(name=name, summary=output.summary, media_types=list(output.media_types),
                        options=[option_public(option) for option in output.options])


def kind_public(kind: SignalKind) -> KindPublic:
    return KindPublic(name=kind.name, label=kind.label, description=kind.description,
                      suffixes=list(kind.suffixes),
                      outputs=[output_public(name, output) for name, output in kind.outputs.items()])


@router.get("", summary="The signal kinds: the files each reads and the outputs it renders")
def list_kinds() -> list[KindPublic]:
    return [kind_public(kind) for kind in kinds().values()]
