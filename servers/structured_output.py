"""What a request asks of an LLM's output, in engine-neutral terms: a JSON schema to decode against
and how tool calls are read out of the text.

Both LLM engines build one ``OutputPlan`` per request: TRANSFORMERS compiles ``schema`` to a token
mask (``servers.generation.grammar``), VLLM hands it to vLLM's structured outputs. A forced tool
call (``tool_choice`` required or a named function) is a schema too: ``{"name", "arguments"}`` with
each function's parameters as the arguments' schema, so the arguments always parse and validate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from configs.structured_models import FunctionSpec, NamedToolChoice

ToolMode = Literal["none", "auto", "forced"]


@dataclass(frozen=True)
class OutputPlan:
    schema: dict[str, Any] | None = None  # the output must match this JSON schema (None: free text)
    schema_param: str = ""  # the request field the schema came from (named in a compile error)
    tool_mode: ToolMode = "none"  # forced: the whole output is the calls' JSON; auto: the model may call
    tools: list[dict[str, Any]] = field(default_factory=list)  # OpenAI tool dicts, for the chat template

    @property
    def tool_names(self) -> list[str]:
        return [t["function"]["name"] for t in self.tools]


def output_plan(params: BaseModel) -> OutputPlan:
    """The plan for ``params`` (a ``ConstrainedLLMParams``; plain ``LLMParams`` mean free text)."""
    fmt = getattr(params, "response_format", None)
    choice = params.effective_tool_choice() if hasattr(params, "effective_tool_choice") else "none"
    tools = [t.model_dump(exclude_none=True) for t in getattr(params, "tools", None) or []] if choice != "none" else []
    schema = fmt.output_schema() if fmt is not None else None
    param = "response_format.json_schema.schema" if fmt is not None and fmt.type == "json_schema" else "response_format"
    if choice == "auto":  # a JSON answer leaves no room for a call: the tools are only shown then
        return OutputPlan(schema, param, "auto" if schema is None else "none", tools)
    if choice != "none":
        specs = [t.function for t in params.tools]
        if isinstance(choice, NamedToolChoice):
            specs = [s for s in specs if s.name == choice.function.name]
        schema = forced_calls_schema(specs, parallel=params.parallel_tool_calls and not isinstance(choice, NamedToolChoice))
        return OutputPlan(schema, "tools", "forced", tools)
    return OutputPlan(schema, param)


def forced_calls_schema(functions: list[FunctionSpec], parallel: bool) -> dict[str, Any]:
    """``{"name": <one of functions>, "arguments": <its parameters>}``, or a list of 1 to
    ``len(functions)`` of them (any function, repeats allowed). The upper bound is ours: unbounded,
    small models keep adding calls until ``max_tokens``; an agent loop asks again after the results.

    Each function's arguments schema is hoisted into the root ``$defs`` (its own ``$defs`` too, and
    its local ``$ref``s rewritten), because JSON pointers cannot index into the ``anyOf`` list."""
    defs: dict[str, Any] = {}
    cases = []
    for spec in functions:
        args_ref = _hoist(spec.name, spec.arguments_schema(), defs)
        cases.append({
            "type": "object",
            "properties": {"name": {"const": spec.name}, "arguments": {"$ref": args_ref}},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        })
    call = cases[0] if len(cases) == 1 else {"anyOf": cases}
    schema: dict[str, Any] = {"type": "array", "items": call, "minItems": 1,
                              "maxItems": len(functions)} if parallel else dict(call)
    schema["$defs"] = defs
    return schema


def _hoist(prefix: str, schema: dict[str, Any], defs: dict[str, Any]) -> str:
    schema = dict(schema)
    local = {**schema.pop("definitions", {}), **schema.pop("$defs", {})}
    names = {name: f"{prefix}__{name}" for name in local}
    root = f"#/$defs/{prefix}__args"

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: rewrite(v) for k, v in node.items()}
            ref = out.get("$ref")
            if isinstance(ref, str) and (ref == "#" or ref.startswith("#/")):
                out["$ref"] = _rewrite_ref(ref, root, names)
            return out
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    defs[f"{prefix}__args"] = rewrite(schema)
    for name, target in names.items():
        defs[target] = rewrite(local[name])
    return root


def _rewrite_ref(ref: str, root: str, names: dict[str, str]) -> str:
    for container in ("#/$defs/", "#/definitions/"):
        if ref.startswith(container):
            head, _, rest = ref[len(container):].partition("/")
            if head in names:
                return f"#/$defs/{names[head]}" + (f"/{rest}" if rest else "")
    return root + ref[1:]
