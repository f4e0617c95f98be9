#!/bin/sh
# Regenerate the Python stubs of KEDA's external scaler protocol (committed beside the .proto).
# Needs grpcio-tools (pip install grpcio-tools==1.85.1, the version matching the pinned grpcio).
set -eu
cd "$(dirname "$0")/../src"
python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
    pykaito/operator/kedapb/externalscaler.proto
