"""JSON schemas as llama.cpp grammars (GBNF), for ``response_format`` and forced tool calls on LLAMA_CPP.

The schema (an ``OutputPlan``'s, the same one TRANSFORMERS compiles with xgrammar) is converted by
llama.cpp's own converter (its Python port in ``llama_cpp.llama_grammar``) and enforced by llama.cpp's
grammar sampler, first in each constrained request's sampler chain: tokens the grammar forbids never
reach top-k, top-p or the draw, and end-of-sequence is allowed only once the JSON value is complete.

The port's rule for a character of a JSON string lets through the control characters U+0000-U+001F,
which JSON forbids raw in a string: a sampled newline inside a value made the answer unparseable.
llama.cpp's own converter (``common/json-schema-to-grammar.cpp``) excludes them and DEL; so does the rule
``schema_grammar`` puts in its place.
"""

from __future__ import annotations

import json
from typing import Any

from common.errors import InvalidRequestError
from servers.llama.gguf_model import GgufModel

# what llama.cpp's C++ converter allows in a JSON string: no raw control characters (escaped ones are fine)
STRING_CHAR = r'''[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'''


def schema_grammar(model: GgufModel, schema: dict[str, Any], param: str) -> str:
    """The GBNF grammar of ``schema``, checked by llama.cpp's parser; a schema it cannot enforce is a 400
    naming ``param``."""
    from llama_cpp.llama_grammar import PRIMITIVE_RULES, json_schema_to_gbnf

    try:
        grammar = json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # noqa: BLE001 - the converter raises plain exceptions for what it does not support
        raise InvalidRequestError(f"{param}: the schema cannot be enforced: {exc}", param=param) from None
    port_rule = f"char ::= {PRIMITIVE_RULES['char'].content}"  # replaced; a no-op once the port excludes them too
    grammar = "\n".join(f"char ::= {STRING_CHAR}" if line == port_rule else line for line in grammar.split("\n"))
    lib = model.llama.lib
    sampler = lib.llama_sampler_init_grammar(model.vocab, grammar.encode(), b"root")
    if not sampler:
        reason = "; ".join(model.llama.take_errors()[-2:]) or "llama.cpp rejected its grammar"
        raise InvalidRequestError(f"{param}: the schema cannot be enforced: {reason}", param=param)
    lib.llama_sampler_free(sampler)
    return grammar
