"""``python -m pykaito.operator``: run the Workspace operator.

    python -m pykaito.operator --all-namespaces
    python -m pykaito.operator --namespace team-a --namespace team-b --log-format json
    python -m pykaito.operator --all-namespaces --peering pykaito     # one of several replicas

With ``--peering NAME`` several replicas coordinate through kopf's peering objects (ClusterKopfPeering
NAME, or KopfPeering NAME in each watched namespace): the one with the highest ``--priority`` (random
unless given) acts, the others pause; when it stops renewing its entry (killed, node lost) the next one
takes over within ``KAITO_OPERATOR_PEERING_LIFETIME_SECONDS`` (15 by default).

Settings come from ``KAITO_OPERATOR_*`` environment variables (see pykaito.operator.settings);
``/healthz`` on ``--liveness-port`` answers while the operator runs, ``/metrics`` on
``KAITO_OPERATOR_METRICS_PORT``.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Sequence

from pykaito.operator.settings import settings_from_env

DEFAULT_PEERING = "pykaito"


def build_args(argv: Sequence[str] | None = None) -> list[str]:
    """The kopf command line for our options."""
    parser = argparse.ArgumentParser(
        prog="python -m pykaito.operator", description="Run the pykaito operator."
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)"
    )
    parser.add_argument("--log-format", choices=["plain", "full", "json"], default="full")
    parser.add_argument("--liveness-port", type=int, default=8080, help="serve /healthz here (0: off)")
    parser.add_argument(
        "--peering",
        nargs="?",
        const=DEFAULT_PEERING,
        default=None,
        metavar="NAME",
        help=f"coordinate with other replicas through this peering object (default name {DEFAULT_PEERING})",
    )
    parser.add_argument(
        "--priority",
        type=int,
        default=None,
        help="the highest priority among replicas acts (default: random, so replicas never tie)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    kopf_args = ["run", "--log-format", args.log_format]
    if args.verbose:
        kopf_args.append("--verbose")
    if args.peering:
        priority = args.priority if args.priority is not None else secrets.randbelow(2**31 - 1) + 1
        kopf_args += ["--peering", args.peering, "--priority", str(priority)]
    else:
        kopf_args.append("--standalone")
    if args.namespace:
        for namespace in args.namespace:
            kopf_args += ["--namespace", namespace]
    else:
        kopf_args.append("--all-namespaces")
    if args.liveness_port:
        kopf_args += ["--liveness", f"http://0.0.0.0:{args.liveness_port}/healthz"]
    kopf_args += ["-m", "pykaito.operator.handlers"]
    if settings_from_env().webhook.enabled:
        kopf_args += ["-m", "pykaito.operator.webhook"]
    return kopf_args


def main(argv: Sequence[str] | None = None) -> None:
    import kopf.cli

    kopf.cli.main(args=build_args(argv), prog_name="pykaito-operator")


if __name__ == "__main__":
    main(sys.argv[1:])
