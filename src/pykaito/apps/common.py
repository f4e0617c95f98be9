"""What both chat apps say and send the same way: the default system prompt, the demo-model notice."""

from __future__ import annotations

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Answer clearly and concisely."

# Sent after a reply that was cut off, to have the model carry on from its last word.
CONTINUE_PROMPT = "Continue exactly where your last reply stopped, without repeating anything."

DEMO_MODELS = ("smollm2-135m",)


def is_demo_model(model: str | None) -> bool:
    """The embedded SmolLM2-135M: fine for trying the apps, not for real answers."""
    return bool(model) and any(name in (model or "").lower() for name in DEMO_MODELS)


def demo_notice(model: str) -> str:
    return (
        f"{model} is a small demo model (135 million parameters): expect short, often wrong answers. "
        "For real use, serve a larger GGUF with `kaito up --model FILE.gguf`, or deploy a Workspace "
        "on a cluster and chat with it through `kaito connect WORKSPACE`."
    )
