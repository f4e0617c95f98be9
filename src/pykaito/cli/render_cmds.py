"""``kaito render``: the Kubernetes objects a Workspace becomes, as multi-document YAML.

What the operator applies, computed offline: Workspaces are loaded, defaulted, validated and
planned, then rendered. ConfigMaps in the same file feed ``inference.config``; Node objects in the
file or in ``--nodes`` size bring-your-own Workspaces.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from pykaito.api.loading import dump_yaml, load_path
from pykaito.cli.output import DocumentFormat, emit, err_console
from pykaito.cli.set_cmds import render_sets
from pykaito.errors import InputError
from pykaito.manifests import Images, NodeClassRef
from pykaito.manifests.documents import node_objects, render_documents
from pykaito.manifests.weight_cache import WeightCacheSettings


def parse_images(values: list[str]) -> Images:
    """``["vllm=REPO:TAG", "cpu=REPO:TAG"]`` -> Images with those replaced."""
    overrides: dict[str, str] = {}
    for value in values:
        key, sep, image = value.partition("=")
        if not sep:
            raise InputError(
                f"--image {value!r}: expected RUNTIME=IMAGE with RUNTIME vllm, transformers or cpu"
            )
        overrides[key.strip()] = image.strip()
    return Images().with_overrides(overrides)


def parse_node_class(value: str | None) -> NodeClassRef:
    """``GROUP/KIND/NAME`` -> NodeClassRef; None gives the AKS default."""
    if value is None:
        return NodeClassRef()
    parts = value.split("/")
    if len(parts) != 3 or not all(parts):
        raise InputError(
            f"--node-class {value!r}: expected GROUP/KIND/NAME, e.g. karpenter.k8s.aws/EC2NodeClass/default"
        )
    return NodeClassRef(group=parts[0], kind=parts[1], name=parts[2])


def render_command(
    filename: Annotated[
        str,
        typer.Option(
            "--filename",
            "-f",
            metavar="FILE",
            help="A Workspace YAML file (several documents allowed), or - for stdin.",
        ),
    ],
    image: Annotated[
        list[str] | None,
        typer.Option(
            "--image",
            metavar="RUNTIME=IMAGE",
            help="Replace a runtime image: vllm=IMAGE, transformers=IMAGE or cpu=IMAGE (repeatable).",
        ),
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace",
            "-n",
            metavar="NAMESPACE",
            help="Namespace for Workspaces that name none (default: default).",
        ),
    ] = None,
    nodes: Annotated[
        str | None,
        typer.Option(
            "--nodes",
            metavar="FILE",
            help="Bring-your-own nodes as YAML (kubectl get nodes -o yaml), to size on them.",
        ),
    ] = None,
    include_nodeclaims: Annotated[
        bool,
        typer.Option("--include-nodeclaims", help="Also print the karpenter.sh/v1 NodeClaims to provision."),
    ] = False,
    node_class: Annotated[
        str | None,
        typer.Option(
            "--node-class",
            metavar="GROUP/KIND/NAME",
            help="NodeClaim node class GROUP/KIND/NAME (default karpenter.azure.com/AKSNodeClass/default).",
        ),
    ] = None,
    prometheus: Annotated[
        str | None,
        typer.Option(
            "--prometheus", metavar="URL", help="InferenceSets: KEDA reads the metric from this Prometheus."
        ),
    ] = None,
    gateway: Annotated[
        str | None,
        typer.Option(
            "--gateway", metavar="NAME", help="InferenceSets: also an InferencePool and an HTTPRoute."
        ),
    ] = None,
    weight_cache: Annotated[
        bool,
        typer.Option(
            "--weight-cache",
            help="Download hub weights once into a PVC (a download Job) and have the pods read it "
            "read-only, as the operator does with the chart's weightCache.enabled.",
        ),
    ] = False,
    storage_class: Annotated[
        str | None,
        typer.Option("--storage-class", metavar="NAME", help="With --weight-cache: the PVC's StorageClass."),
    ] = None,
    output: Annotated[
        DocumentFormat, typer.Option("--output", "-o", help="yaml (documents) or json (one v1 List)")
    ] = DocumentFormat.yaml,
) -> None:
    """Print the Kubernetes objects that run each Workspace in a file, as multi-document YAML
    (or, with -o json, one v1 List).

    For an InferenceSet: its replica Workspaces, its Service and, when annotated, its KEDA ScaledObject.

    The same inputs always print the same text.
    Pipe it to `kubectl apply -f -` to deploy without the operator.
    """
    images = parse_images(image or [])
    ref = parse_node_class(node_class)
    if storage_class and not weight_cache:
        raise InputError("--storage-class applies to the weight cache: add --weight-cache")
    docs = load_path(filename)
    set_objects = render_sets(docs, namespace=namespace, prometheus=prometheus, gateway=gateway)
    if not docs.workspaces and set_objects:
        if output is DocumentFormat.json:
            emit({"apiVersion": "v1", "kind": "List", "items": set_objects}, output)
            return
        sys.stdout.write(dump_yaml(set_objects))
        return
    if not docs.workspaces:
        raise InputError(f"{docs.source}: no Workspace found (a document with `kind: Workspace`)")
    rendered = render_documents(
        docs,
        nodes=node_objects(load_path(nodes)) if nodes else (),
        images=images,
        namespace=namespace,
        include_nodeclaims=include_nodeclaims,
        node_class=ref,
        weight_cache=WeightCacheSettings(storage_class=storage_class or "") if weight_cache else None,
    )
    for note in rendered.notes:
        err_console.print(f"note: {note}", highlight=False, soft_wrap=True)
    objects = [*rendered.objects, *set_objects]
    if output is DocumentFormat.json:
        emit({"apiVersion": "v1", "kind": "List", "items": objects}, output)
        return
    sys.stdout.write(dump_yaml(objects))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("render")(render_command)
