"""Which optional part of pykaito a missing module belongs to, so a command can say what to install.

The base install is the pure core and the ``kaito`` command; serving, the chat apps, cluster access,
the operator and Hugging Face lookups come with extras (``pip install 'pykaito[runtime]'``...).
"""

from __future__ import annotations

# top-level module -> the extra that installs it (kept in step with pyproject.toml by a test)
EXTRA_OF = {
    "fastapi": "runtime",
    "uvicorn": "runtime",
    "llama_cpp": "runtime",
    "numpy": "runtime",
    "jinja2": "runtime",
    "prometheus_client": "runtime",
    "openai": "apps",
    "prompt_toolkit": "apps",
    "streamlit": "apps",
    "kubernetes": "apps",
    "urllib3": "apps",
    "kopf": "operator",
    "kubernetes_asyncio": "operator",
    "huggingface_hub": "hub",
    "matplotlib": "plots",
}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The message for a module an extra would have installed; None for any other missing module."""
    module = (exc.name or "").split(".")[0]
    extra = EXTRA_OF.get(module)
    if extra is None:
        return None
    return (
        f"this command needs pykaito's {extra!r} extra (the {module} module is not installed): "
        f"pip install 'pykaito[{extra}]', or 'pykaito[all]' for everything"
    )
