"""The OpenAPI document, made to match what the server accepts (issue 12; checked by schemathesis).

FastAPI's schema is post-processed here:

* **Examples from the served model**: every example latent (``schemas.EXAMPLE_LATENT``, 8
  numbers) becomes one of the loaded model's ``latent_dim``, so "Try it out" in /docs works;
  the document is cached only once the model is loaded (before that, the 8-number examples).
* **Integer bounds as integers**: pydantic prints ``le=2**63 - 64`` on an optional field as a
  float (9.223372036854776e+18, which is not even the bound); every ``minimum``/``maximum`` of an
  integer schema is written as the exact integer.
* **Latents have exactly latent_dim numbers** once the model is loaded.
* **Attribute names are the served model's**: every ``attributes`` object may only hold the
  model's attribute names (``propertyNames``; none for a model without directions), a sweep
  only names one of them (no sweep for such a model), and the /edit examples use them.
* **Multipart forms a route reads itself** (/interpolate) get their schema from a pydantic
  model (``form_schema``): the same field definitions as the JSON body, so the two cannot drift.
* **Multipart bodies are closed**: ``additionalProperties: false`` (unknown fields are 422), the
  upload list has ``minItems: 1`` and ``maxItems: 64`` of non-empty files, and optional fields
  are their type, not "or null" (a form cannot send null).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service.schemas import EXAMPLE_LATENT, EXAMPLE_LOGVAR, LATENT_MAX_ITEMS, EditRequest, InterpolateRequest
from service.settings import MAX_ROWS_PER_REQUEST

# An upload: a non-empty file (an empty one is a 415, as is one that is not an image).
IMAGE_FILE = {"type": "string", "format": "binary", "minLength": 1}


def example_latent(latent_dim: int) -> list[float]:
    """A fixed, plausible latent of ``latent_dim`` numbers in [-1, 1] (the first 8 are the tiny
    model's EXAMPLE_LATENT)."""
    extra = [round(((i * 37) % 21 - 10) / 10, 2) for i in range(len(EXAMPLE_LATENT), latent_dim)]
    return [*EXAMPLE_LATENT, *extra][:latent_dim]


def _rewrite(node: Any, latent_dim: int | None) -> Any:
    if isinstance(node, list):
        if latent_dim is not None and node == EXAMPLE_LATENT:
            return example_latent(latent_dim)
        if latent_dim is not None and node == EXAMPLE_LOGVAR:
            return [EXAMPLE_LOGVAR[0]] * latent_dim
        return [_rewrite(v, latent_dim) for v in node]
    if isinstance(node, dict):
        out = {k: _rewrite(v, latent_dim) for k, v in node.items()}
        if latent_dim is not None and out.get("type") == "array" and out.get("maxItems") == LATENT_MAX_ITEMS:
            out.update(minItems=latent_dim, maxItems=latent_dim)  # a latent: exactly latent_dim numbers
        if out.get("type") == "integer":
            for key in ("minimum", "maximum"):
                if isinstance(out.get(key), float) and out[key].is_integer():
                    # The float lost the exact value: 2**63 - 64 printed as 9.223372036854776e+18.
                    out[key] = _exact(out[key])
        return out
    return node


def _exact(bound: float) -> int:
    """The integer a float bound stands for (every bound of this API is a float exactly,
    MAX_SEED included)."""
    return int(bound)


def form_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The multipart/form-data schema of a form described by a pydantic ``model``: its JSON
    schema, each optional field as its type alone (a form sends a field or not; there is no
    null), without pydantic's titles."""
    schema = model.model_json_schema(mode="validation")
    schema.pop("title", None)
    for field in schema["properties"].values():
        field.pop("title", None)
        options = [o for o in field.pop("anyOf", []) if o.get("type") != "null"]
        if options:
            assert len(options) == 1, field
            field.pop("default", None)  # None: not sent
            field.update({**options[0], **field})  # the field's own description wins
    return schema


def _close_multipart(schemas: dict[str, Any]) -> None:
    for name, schema in schemas.items():
        if name.startswith("Body_") and schema.get("type") == "object":
            schema["additionalProperties"] = False
            for field in schema.get("properties", {}).values():
                # An optional form field is sent or not: text "null" is no value of it.
                options = [o for o in field.pop("anyOf", []) if o.get("type") != "null"]
                if len(options) == 1:
                    field.update(options[0])
            image = schema.get("properties", {}).get("image")
            if image is not None and image.get("type") == "array":
                image.update(minItems=1, maxItems=MAX_ROWS_PER_REQUEST)
                image["items"] = IMAGE_FILE


ATTRIBUTES_MARK = "Attribute edits"  # how schemas.Attributes' description begins


def _attribute_names(schemas: dict[str, Any], names: list[str]) -> None:
    """Restrict attribute names to the served model's (see the module docstring)."""
    _restrict_attribute_objects(schemas, names)
    sweep = schemas.get("Sweep", {}).get("properties", {}).get("attribute")
    edit = schemas.get("EditRequest", {})
    if sweep is not None and names:
        sweep["enum"] = names
    elif sweep is not None:
        edit.get("properties", {}).pop("sweep", None)
    examples = [_edit_example(ex, names) for ex in edit.get("examples", [])]
    if examples:
        edit["examples"] = examples


def _restrict_attribute_objects(node: Any, names: list[str]) -> None:
    """Every ``attributes`` object schema under ``node`` may hold only ``names`` (none: empty)."""
    if isinstance(node, list):
        for v in node:
            _restrict_attribute_objects(v, names)
    elif isinstance(node, dict):
        if node.get("type") == "object" and str(node.get("description", "")).startswith(ATTRIBUTES_MARK):
            if names:
                node["propertyNames"] = {"enum": names}
            else:
                node["maxProperties"] = 0
        for v in node.values():
            _restrict_attribute_objects(v, names)


def _edit_example(example: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """An /edit example naming the served model's attributes (without edits when it has none)."""
    ex = dict(example)
    if not names:
        ex.pop("sweep", None)
        ex.pop("attributes", None)
    else:
        if "attributes" in ex:
            ex["attributes"] = {names[0]: 2.0}
        if "sweep" in ex:
            ex["sweep"] = {**ex["sweep"], "attribute": names[-1]}
    return ex


def build_openapi(
    app: FastAPI, latent_dim: int | None, attributes: list[str] | None = None
) -> dict[str, Any]:
    """FastAPI's schema plus the JSON bodies of /interpolate and /edit (those routes also take
    multipart and read their bodies themselves, so FastAPI cannot infer them; their
    ``openapi_extra`` refers to these components), post-processed as the module docstring says."""
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    _, defs = models_json_schema(
        [(InterpolateRequest, "validation"), (EditRequest, "validation")],
        ref_template="#/components/schemas/{model}",
    )
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(defs.get("$defs", {}))
    _close_multipart(schemas)
    if attributes is not None:
        _attribute_names(schemas, attributes)
    rewritten: dict[str, Any] = _rewrite(schema, latent_dim)
    return rewritten
