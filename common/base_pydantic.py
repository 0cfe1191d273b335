"""Pydantic bases shared by every schema in the project."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class BasePydantic(BaseModel):
    """Strict base for our own schemas (YAML config, /v1/infer): a typo fails loudly."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())


class LenientPydantic(BaseModel):
    """Base for schemas owned by others (OpenAI's API): unknown fields are kept, not rejected."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, protected_namespaces=())
