"""Pure rendering of the Kubernetes objects that run a Workspace, from the Workspace and its Plan.

No I/O, no clock: the same inputs give the same objects, in the same order.

    render(workspace, plan)            Service, headless Service, StatefulSet
    render_nodeclaims(workspace, plan) one karpenter.sh/v1 NodeClaim per planned node
"""

from pykaito.manifests.images import Images
from pykaito.manifests.meta import (
    ANNOTATION_API_KEY_SECRET,
    ANNOTATION_CONFIG_HASH,
    ANNOTATION_REVISION,
    API_KEY_SECRET_KEY,
)
from pykaito.manifests.nodeclaims import NodeClassRef, nodeclaim_name, render_nodeclaims
from pykaito.manifests.workload import render

__all__ = [
    "ANNOTATION_API_KEY_SECRET",
    "ANNOTATION_CONFIG_HASH",
    "ANNOTATION_REVISION",
    "API_KEY_SECRET_KEY",
    "Images",
    "NodeClassRef",
    "nodeclaim_name",
    "render",
    "render_nodeclaims",
]
