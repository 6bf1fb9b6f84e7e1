"""service/openapi.py: the multipart schemas of /interpolate and /edit come from pydantic models,
/interpolate's from the same options model as its JSON body (InterpolateForm extends
InterpolateOptions), so the form and the JSON body cannot drift apart."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.api.routes.edit import FORM_FIELDS as EDIT_FORM_FIELDS
from service.api.routes.interpolate import FORM_FIELDS, PHOTO_FIELDS
from service.schemas import InterpolateOptions

OPTIONS = list(InterpolateOptions.model_fields)


@pytest.fixture(scope="module")
def spec(client: httpx.Client) -> dict[str, Any]:
    body: dict[str, Any] = client.get("/openapi.json").json()
    return body


def form(spec: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = spec["paths"]["/interpolate"]["post"]["requestBody"]["content"][
        "multipart/form-data"
    ]["schema"]
    return schema


def test_the_form_schema_has_the_fields_the_route_reads(spec: dict[str, Any]) -> None:
    schema = form(spec)
    assert set(schema["properties"]) == {*PHOTO_FIELDS, *FORM_FIELDS}
    assert set(FORM_FIELDS) == set(OPTIONS) and "align" in PHOTO_FIELDS and "start_seed" in PHOTO_FIELDS
    assert schema["additionalProperties"] is False
    ends = [{r["required"][0] for r in part["oneOf"]} for part in schema["allOf"]]
    assert ends == [{"start_image", "start_seed"}, {"end_image", "end_seed"}]


@pytest.mark.parametrize("name", OPTIONS)
def test_each_option_has_the_json_bodys_schema(spec: dict[str, Any], name: str) -> None:
    json_body = spec["components"]["schemas"]["InterpolateRequest"]["properties"][name]
    as_form = form(spec)["properties"][name]
    assert {k: v for k, v in as_form.items() if k != "title"} == {
        k: v for k, v in json_body.items() if k != "title"
    }


def test_the_bounds_that_once_drifted_are_there(spec: dict[str, Any]) -> None:
    props = form(spec)["properties"]
    assert (props["temperature"]["exclusiveMinimum"], props["temperature"]["maximum"]) == (0, 2)
    assert (props["duration_ms"]["minimum"], props["duration_ms"]["maximum"]) == (10, 10_000)
    assert (props["steps"]["minimum"], props["steps"]["maximum"]) == (2, 64)
    seed = props["start_seed"]
    assert seed["type"] == "integer" and seed["minimum"] == 0 and isinstance(seed["maximum"], int)
    assert props["start_image"] == {
        **props["start_image"],
        "type": "string",
        "format": "binary",
        "minLength": 1,
    }
    assert props["align"]["type"] == "boolean" and "anyOf" not in props["align"]


def test_the_edit_form_schema_has_the_fields_the_route_reads(spec: dict[str, Any]) -> None:
    schema = spec["paths"]["/edit"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    fields = ("image", "attributes", "sweep", "align", "refine")
    assert tuple(schema["properties"]) == EDIT_FORM_FIELDS == fields
    assert schema["required"] == ["image"] and schema["properties"]["image"]["format"] == "binary"
    assert schema["properties"]["align"]["type"] == "boolean"
    refine = schema["properties"]["refine"]
    assert (refine["type"], refine["minimum"], refine["default"]) == ("integer", 0, 0)
