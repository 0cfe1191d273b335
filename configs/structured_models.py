"""Schemas for constrained LLM output: ``response_format`` (JSON modes) and function ``tools``.

They are request ``params`` of the LLM engines that can enforce them while decoding
(``ConstrainedLLMParams``; TRANSFORMERS with xgrammar, VLLM with its structured outputs). An engine
whose params model lacks these fields answers 400 naming the field. JSON schemas are checked here,
against their metaschema, so a broken schema is a 400 naming the problem before any model work.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from common.base_pydantic import BasePydantic
from configs.llm_models import LLMParams

MAX_TOOLS = 128
NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
# The request fields that need an engine able to constrain decoding (named in its 400 otherwise).
CONSTRAINT_FIELDS = ("response_format", "tools", "tool_choice", "parallel_tool_calls")


def check_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Raise ``ValueError`` naming the problem when ``schema`` is not a valid JSON schema."""
    import jsonschema

    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise ValueError(f"invalid JSON schema at {where}: {exc.message}") from None
    return schema


class JsonSchemaFormat(BasePydantic):
    """``response_format.json_schema``: OpenAI's shape. ``strict`` is accepted; the schema is always enforced."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema", description="None = any JSON object.")
    strict: bool | None = None

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_json_schema(value)


class ResponseFormat(BasePydantic):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @field_validator("json_schema")
    @classmethod
    def _schema_for_its_type(cls, value: JsonSchemaFormat | None, info: ValidationInfo) -> JsonSchemaFormat | None:
        if info.data.get("type") != "json_schema" and value is not None:
            raise ValueError("json_schema is only read with type 'json_schema'")
        return value

    def output_schema(self) -> dict[str, Any] | None:
        """The JSON schema the answer must match; None for free text."""
        if self.type == "text":
            return None
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type 'json_schema' needs json_schema: {name, schema}")
        if self.json_schema is not None and self.json_schema.schema_ is not None:
            return self.json_schema.schema_
        return {"type": "object"}


class FunctionSpec(BasePydantic):
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = Field(default=None, description="JSON schema of the arguments (an object).")
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        check_json_schema(value)
        if value.get("type", "object") != "object":
            raise ValueError("a function's parameters must be a JSON schema of type 'object'")
        return value

    def arguments_schema(self) -> dict[str, Any]:
        """The parameters schema, always of type object (OpenAI's arguments are an object)."""
        return {**(self.parameters or {}), "type": "object"}


class FunctionTool(BasePydantic):
    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(BasePydantic):
    name: str


class NamedToolChoice(BasePydantic):
    type: Literal["function"]
    function: NamedFunction


class ConstrainedLLMParams(LLMParams):
    """``LLMParams`` plus what constrains the answer (OpenAI's fields, same names and shapes)."""

    response_format: ResponseFormat | None = None
    tools: list[FunctionTool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        default=None, description="Default: auto with tools, none without.")
    parallel_tool_calls: bool = Field(
        default=True, description="With tool_choice required: a list of 1 to len(tools) calls; false: exactly one.")

    @field_validator("response_format")
    @classmethod
    def _format_complete(cls, value: ResponseFormat | None) -> ResponseFormat | None:
        if value is not None:
            value.output_schema()  # raises for json_schema without its schema object
        return value

    @field_validator("tools")
    @classmethod
    def _unique_names(cls, value: list[FunctionTool] | None) -> list[FunctionTool] | None:
        names = [t.function.name for t in value or []]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"function names must be unique; repeated: {', '.join(duplicates)}")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _choice_matches_tools(cls, value: Any, info: ValidationInfo) -> Any:
        names = [t.function.name for t in info.data.get("tools") or []]
        forced = value == "required" or isinstance(value, NamedToolChoice)
        if forced and not names:
            raise ValueError("tool_choice requires a function call but no tools are given")
        if isinstance(value, NamedToolChoice) and value.function.name not in names:
            raise ValueError(f"function {value.function.name!r} is not among the tools ({', '.join(names)})")
        fmt = info.data.get("response_format")
        if forced and fmt is not None and fmt.type != "text":
            raise ValueError("a forced tool call and a JSON response_format cannot both constrain one answer")
        return value

    def effective_tool_choice(self) -> str | NamedToolChoice:
        """OpenAI's default: ``auto`` when tools are given, ``none`` otherwise."""
        if not self.tools:
            return "none"
        return self.tool_choice or "auto"
