"""The fit options a job takes, with their choices, bounds and help, read from model.options and
its registries: the page builds its form from this, so a new preset or activation shows there
without an edit. Open without an API key, as /openapi.json is, which says the same."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.schemas import API_OPTIONS
from model.options import default_of, option_of, value_type

router = APIRouter(prefix="/v1/options", tags=["options"])  # open: see api.auth

TypeName = Literal["string", "integer", "number"]
TYPE_NAMES: dict[type, TypeName] = {str: "string", int: "integer", float: "number"}


class ChoicePublic(BaseModel):
    value: str = Field(description="What the form field sends.")
    label: str = Field(description="What a person calls it.")


class OptionPublic(BaseModel):
    name: str = Field(description="The form field of POST /v1/jobs.")
    type: TypeName
    default: str | int | float | None = Field(description="Taken when the field is not sent.")
    help: str
    choices: list[ChoicePublic] = Field(description="The values allowed; empty: any of `type`.")
    minimum: int | float | None = Field(description="The lowest value allowed.")
    exclusive_minimum: int | float | None = Field(description="Values must be above this.")
    maximum: int | float | None = Field(description="The highest value allowed.")


class OptionsPublic(BaseModel):
    options: list[OptionPublic] = Field(description="In the order the CLI lists them.")


def option_public(name: str) -> OptionPublic:
    declared = API_OPTIONS[name]
    spec = option_of(declared)
    return OptionPublic(
        name=name, type=TYPE_NAMES[value_type(name)],
        default=default_of(declared),
        help=spec.help + spec.service_note,
        choices=[ChoicePublic(value=value, label=spec.labels.get(value, value)) for value in spec.names()],
        minimum=spec.ge, exclusive_minimum=spec.gt, maximum=spec.le,
    )


@router.get("", summary="The fit options a job takes: choices, bounds and help")
def list_options() -> OptionsPublic:
    return OptionsPublic(options=[option_public(name) for name in API_OPTIONS])
