#!/usr/bin/env bash
# Runs the official MCP conformance suite's server scenarios against mesh-mcp's /mcp, with the
# expected-failures baseline in .ci/mcp-conformance-baseline.yml (each entry says why). The
# suite is installed into .tools/conformance; mesh-mcp (target/debug) runs on free loopback
# ports and is killed by its PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.1.13
dir=.tools/conformance
if [ ! -x "$dir/node_modules/.bin/conformance" ] || \
   ! grep -q "\"version\": \"$VERSION\"" "$dir/node_modules/@modelcontextprotocol/conformance/package.json" 2>/dev/null; then
  echo "mcp-conformance: installing @modelcontextprotocol/conformance@$VERSION into $dir"
  mkdir -p "$dir"
  npm install --silent --no-audit --no-fund --prefix "$dir" "@modelcontextprotocol/conformance@$VERSION" >/dev/null
fi

# The integration tests built it; build it only when run alone.
[ -x target/debug/mesh-mcp ] || cargo build --locked -p mesh-mcp
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http=$(free_port)
grpc=$(free_port)
work=$(mktemp -d)
# No Prometheus, no cluster, no token: the scenarios exercise the protocol, not the mesh.
KUBECONFIG="$work/none" target/debug/mesh-mcp --embedded-collector --prometheus-url http://127.0.0.1:1 \
  --insecure-no-auth --http-listen "127.0.0.1:$http" --grpc-listen "127.0.0.1:$grpc" \
  >"$work/mesh-mcp.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$http") 2>/dev/null && break
  sleep 0.1
done
status=0
"$dir/node_modules/.bin/conformance" server --url "http://127.0.0.1:$http/mcp" \
  --expected-failures .ci/mcp-conformance-baseline.yml -o "$work/results" >"$work/out.txt" 2>&1 || status=$?
sed -n '/=== SUMMARY ===/,$p' "$work/out.txt"
if [ "$status" -ne 0 ]; then
  echo "mcp-conformance: failed (exit $status); the suite's output:" >&2
  cat "$work/out.txt" >&2
  echo "mesh-mcp's log:" >&2
  cat "$work/mesh-mcp.log" >&2
fi
exit "$status"
