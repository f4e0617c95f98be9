"""The ``kaito`` command: thin commands over pykaito's packages.

Each command group lives in its own module with a ``register(app)`` function.
Expected failures (every ``PykaitoError``) print one clear line and exit with status 2.
"""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from pykaito.cli import (
    api_cmds,
    bench_cmds,
    catalog_cmds,
    chat_cmds,
    cluster_cmds,
    models_cmds,
    plan_cmds,
    render_cmds,
    serve_cmds,
    set_cmds,
)
from pykaito.cli.extras import missing_extra
from pykaito.cli.output import fail
from pykaito.errors import PykaitoError

app = typer.Typer(
    name="kaito",
    help="Self-host open language models: size, deploy, serve and chat.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (
    catalog_cmds,
    api_cmds,
    plan_cmds,
    render_cmds,
    serve_cmds,
    cluster_cmds,
    set_cmds,
    chat_cmds,
    bench_cmds,
):
    module.register(app)
models_cmds.register(app)


def main() -> None:
    try:
        app()
    except PykaitoError as exc:
        fail(escape(str(exc)))  # plain text: "pip install 'pykaito[hub]'" is not markup
    except ModuleNotFoundError as exc:  # an optional part that is not installed
        message = missing_extra(exc)
        if message is None:
            raise
        fail(escape(message))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
