#!/usr/bin/env bash
# Chat with a model served on your cluster, in three steps:
#   1. apply a Workspace (default: the CPU preset, which runs on any Linux node),
#   2. wait until it is Ready (nodes, pods, and a warm-up generation all done),
#   3. tunnel it to localhost and start the web app with `kaito connect --open-ui`.
#
# Usage: examples/setup_chat_demo.sh [WORKSPACE_FILE] [PORT]
# Environment: KAITO_NAMESPACE (default: the kubeconfig context's), KAITO_CONTEXT, KUBECONFIG.
# Ctrl-C closes the tunnel and the web app; the Workspace keeps running (`kaito delete NAME`).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
file="${1:-$here/workspace-cpu-smollm2.yaml}"
port="${2:-8080}"

opts=()
[[ -n "${KAITO_NAMESPACE:-}" ]] && opts+=(--namespace "$KAITO_NAMESPACE")
[[ -n "${KAITO_CONTEXT:-}" ]] && opts+=(--context "$KAITO_CONTEXT")

name="$(awk '/^metadata:/ {m=1; next} m && /^[^ #]/ {m=0} m && $1 == "name:" {print $2; exit}' "$file" | tr -d '"'"'"'"')"
[[ -n "$name" ]] || { echo "no metadata.name in $file" >&2; exit 2; }

kaito apply -f "$file" "${opts[@]}"
kaito wait "$name" --for ready --timeout 30m "${opts[@]}"
kaito get "$name" "${opts[@]}"
echo
echo "Connecting to $name on http://127.0.0.1:$port (Ctrl-C to stop)."
echo "From another terminal: kaito chat --endpoint http://127.0.0.1:$port"
exec kaito connect "$name" --port "$port" --open-ui "${opts[@]}"
