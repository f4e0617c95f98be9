"""GBNF grammars for structured output: a JSON object (``json_object``) or a JSON schema (``json_schema``).

The conversion is llama.cpp's own, shipped with llama-cpp-python; it is imported on first use
so the server module stays importable where llama.cpp is not installed. Remote ``$ref`` are
never fetched, and length bounds are capped before conversion: the converter unrolls them, so
``minLength: 100000000`` would otherwise build a grammar of hundreds of megabytes.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

MAX_REPEAT = 8192
"""The largest length, item count or pattern repetition a schema may ask for."""

_BOUNDS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")
_REPEAT = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


class GrammarError(ValueError):
    """A JSON schema that cannot be turned into a grammar."""


@cache
def json_object_grammar() -> str:
    """A grammar for one JSON object."""
    from llama_cpp.llama_grammar import JSON_GBNF

    grammar: str = JSON_GBNF  # its root is an object, as json_object asks
    return grammar


def json_schema_grammar(schema: dict[str, Any]) -> str:
    """A grammar for JSON documents matching ``schema``."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        _check_bounds(schema, "schema")
        text = json.dumps(schema)
        grammar: str = json_schema_to_gbnf(text)
    except GrammarError:
        raise
    except (
        AssertionError,  # the converter reports unsupported schemas with assert
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        NotImplementedError,
        RecursionError,
    ) as exc:
        raise GrammarError(f"the JSON schema cannot be turned into a grammar: {exc}") from exc
    return grammar


def _check_bounds(node: Any, path: str) -> None:
    if isinstance(node, list):
        for i, item in enumerate(node):
            _check_bounds(item, f"{path}[{i}]")
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        where = f"{path}.{key}"
        if key in _BOUNDS and isinstance(value, int) and value > MAX_REPEAT:
            raise GrammarError(f"{where} is {value}; this server supports at most {MAX_REPEAT}")
        if key == "pattern" and isinstance(value, str):
            for match in _REPEAT.finditer(value):
                for number in match.groups():
                    if number and int(number) > MAX_REPEAT:
                        raise GrammarError(
                            f"{where} repeats {number} times; this server supports at most {MAX_REPEAT}"
                        )
        _check_bounds(value, where)
