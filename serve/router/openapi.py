"""OpenAPI documentation for endpoints that read and validate their JSON body themselves."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from configs.infer_models import ErrorResponse

# Every route can answer with the error contract; declared so clients and schema checkers know.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (400, "Invalid request"), (401, "Missing or invalid API key"), (404, "Unknown model or route"),
        (413, "Request body too large"), (500, "Engine error"), (503, "Model not ready or at capacity"),
        (504, "Request timed out"),
    )
}


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
