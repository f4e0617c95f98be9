"""Tool calls on the llama.cpp engine: the grammar that constrains a call, and reading calls from the reply.

The model learns the tools from its chat template (which renders ``tools``) and answers a call
in the form such templates teach:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

With ``tool_choice`` ``"required"`` or a named function, a grammar makes the reply exactly one
such call whose ``arguments`` match the function's JSON schema; with ``"auto"`` the model may
answer text or calls, and the calls are read from its reply.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pykaito.runtime import grammar as grammars

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_CALL = re.compile(re.escape(OPEN) + r"\s*(.*?)\s*(?:" + re.escape(CLOSE) + r"|$)", re.DOTALL)
_ROOT = re.compile(r"^root ::=", re.MULTILINE)


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ParsedCall:
    id: str
    name: str
    arguments: str  # JSON text of an object


def call_grammar(functions: Sequence[FunctionSpec]) -> str:
    """A GBNF grammar for one ``<tool_call>`` block calling one of ``functions`` with valid arguments."""
    schema: dict[str, Any] = {
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "name": {"const": f.name},
                    "arguments": f.parameters or {"type": "object"},
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for f in functions
        ]
    }
    body = grammars.json_schema_grammar(schema)
    body = _ROOT.sub("tool-call-json ::=", body, count=1)
    return f'root ::= "{OPEN}\\n" tool-call-json "\\n{CLOSE}"\n{body}'


def parse_calls(text: str, names: Sequence[str]) -> tuple[str, list[ParsedCall]]:
    """The reply's text before its first call, and the well-formed calls of known functions in it.

    A block that is not JSON, names an unknown function or has arguments that are not an object
    is left in the text: the client sees what the model wrote instead of a broken call.
    """
    start = text.find(OPEN)
    if start < 0:
        return text, []
    calls: list[ParsedCall] = []
    for match in _CALL.finditer(text, start):
        try:
            data = json.loads(match.group(1))
        except (ValueError, RecursionError):
            return text, []
        if not isinstance(data, dict) or data.get("name") not in names:
            return text, []
        arguments = data.get("arguments", data.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except (ValueError, RecursionError):
                return text, []
        if not isinstance(arguments, dict):
            return text, []
        calls.append(ParsedCall(f"call_{uuid.uuid4().hex[:24]}", str(data["name"]), json.dumps(arguments)))
    return text[:start].strip(), calls
