"""The chart, the renderer and the package agree on versions and image names (no helm needed)."""

from __future__ import annotations

from pathlib import Path

import yaml

from pykaito import __version__
from pykaito.manifests import Images, NodeClassRef

CHART = Path(__file__).parents[2] / "charts" / "pykaito"


def test_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__


def test_chart_runtime_images_are_the_renderer_defaults() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    images = Images()
    for key, image in (("vllm", images.vllm), ("transformers", images.transformers), ("cpu", images.cpu)):
        repository, tag = image.rsplit(":", 1)
        assert values["runtimeImages"][key]["repository"] == repository
        assert tag == __version__


def test_chart_node_class_is_the_renderer_default() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["nodeProvisioning"]["nodeClassRef"] == NodeClassRef().to_dict()
