"""OpenAPI documentation for endpoints that read and validate their JSON body themselves."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def document_json_body(model: type[BaseModel]) -> dict[str, Any]:
    """An ``openapi_extra`` block declaring ``model`` as the JSON request body."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline_refs(schema, defs)}},
        }
    }


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_refs(defs[ref.split("/")[-1]], defs)
        return {k: _inline_refs(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node
