#!/usr/bin/env bash
# make demo: kube-sim seeded with emojivoto, booksapp and their Linkerd policy; simulated
# emojivoto and booksapp meshes (meshsim) that follow that policy as proxies would, scraped by a
# real Prometheus; mesh-mcp with its embedded collector joining the two (policy verdicts per
# edge) and serving the graph over gRPC and HTTP. Everything listens on 127.0.0.1 and is
# stopped on exit.
# DEMO_ONCE=1 exits after writing mesh.png instead of waiting for Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/debug
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sim_port=$(free_port)
books_port=$(free_port)
prom_port=$(free_port)
grpc_port=$(free_port)
http_port=$(free_port)
kube_port=$(free_port)
bot_port=$(free_port)
chat_port=$(free_port)
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

cat >"$work/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: linkerd-proxy
    honor_labels: true
    static_configs: [{targets: ['127.0.0.1:$sim_port', '127.0.0.1:$books_port']}]
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address="127.0.0.1:$prom_port" --log.level=warn >"$work/prometheus.log" 2>&1 &
pids+=($!)
prom="http://127.0.0.1:$prom_port"
window=15s
token=demo-token
# demo: an admin for kubectl and meshctl; collector: the service account the seeded RBAC lets
# list and watch what the collector indexes, and nothing else; mcp: mesh-mcp's, which may also
# review access and impersonate (every change is made as the requester).
# chatbot-token: the chatbot's identity at mesh-mcp, a delegator (it acts as the chat user).
printf '%s,demo,uid-demo,"system:masters"\ncollector-token,system:serviceaccount:linkerd-mcp:collector,uid-collector\nmcp-token,system:serviceaccount:linkerd-mcp:mcp,uid-mcp\nchatbot-token,system:serviceaccount:linkerd-mcp:chatbot,uid-chatbot\n' \
  "$token" >"$work/tokens.csv"
"$bin/kube-sim" --listen "127.0.0.1:$kube_port" --tls --tls-ca-out "$work/ca.crt" --token-file "$work/tokens.csv" \
  --with-linkerd-crds --seed tools/kube-sim/seed/demo --seed docs/examples/chatbot-rbac >"$work/kube-sim.log" 2>&1 &
pids+=($!)
cat >"$work/kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters: [{name: kube-sim, cluster: {server: "https://127.0.0.1:$kube_port", certificate-authority: "$work/ca.crt"}}]
users: [{name: mcp, user: {token: mcp-token}}]
contexts: [{name: demo, context: {cluster: kube-sim, user: mcp}}]
current-context: demo
YAML
for _ in $(seq 1 50); do [ -s "$work/ca.crt" ] && break; sleep 0.1; done
# The simulated proxies watch policy as real ones watch the policy controller, and refuse what
# it denies (the collector's read-only identity is all they need).
for app in emojivoto:$sim_port booksapp:$books_port; do
  "$bin/meshsim" --builtin "${app%%:*}" --listen "127.0.0.1:${app##*:}" \
    --kube-url "https://127.0.0.1:$kube_port" --kube-ca "$work/ca.crt" --kube-token collector-token \
    >"$work/meshsim-${app%%:*}.log" 2>&1 &
  pids+=($!)
done
KUBECONFIG="$work/kubeconfig" "$bin/mesh-mcp" --embedded-collector --prometheus-url "$prom" \
  --window "$window" --interval 2s \
  --grpc-listen "127.0.0.1:$grpc_port" --http-listen "127.0.0.1:$http_port" \
  --token-file "$work/tokens.csv" \
  --delegator system:serviceaccount:linkerd-mcp:chatbot --delegate-group devs,mesh-admins \
  >"$work/mesh-mcp.log" 2>&1 &
pids+=($!)
# The chatbot against loopback stand-ins for Slack's Web API and Discord's REST API; chatsim
# sends it commands signed as Slack and Discord sign them.
secret=demo-signing-secret
seed=0707070707070707070707070707070707070707070707070707070707070707
"$bin/chatsim" serve --listen "127.0.0.1:$chat_port" >"$work/chatsim.log" 2>&1 &
pids+=($!)
"$bin/mesh-chatbot" --server "127.0.0.1:$grpc_port" --token chatbot-token \
  --identity-map docs/examples/chatbot/identity-map.yaml --http-listen "127.0.0.1:$bot_port" \
  --slack-signing-secret "$secret" --slack-bot-token xoxb-demo --slack-api-url "http://127.0.0.1:$chat_port/api" \
  --discord-public-key "$("$bin/chatsim" public-key --seed "$seed")" --discord-application-id 1200000000000000001 \
  --discord-bot-token demo --discord-api-url "http://127.0.0.1:$chat_port" \
  --alert-slack-channel C0MESH >"$work/mesh-chatbot.log" 2>&1 &
pids+=($!)

echo "demo: meshsim emojivoto on 127.0.0.1:$sim_port, booksapp on 127.0.0.1:$books_port, Prometheus on $prom"
echo "demo: mesh-mcp gRPC on 127.0.0.1:$grpc_port, HTTP on 127.0.0.1:$http_port; kube-sim on https://127.0.0.1:$kube_port"
echo -n "demo: waiting for Prometheus to scrape a full ${window} window "
first=""
for _ in $(seq 1 90); do
  if "$bin/meshctl" graph --prometheus-url "$prom" --window "$window" >/dev/null 2>&1; then
    first=${first:-$(date +%s)}
    # Rates are exact once the window is full of scrapes.
    [ $(( $(date +%s) - first )) -ge 16 ] && break
  fi
  echo -n "."
  sleep 1
done
echo
if [ -z "$first" ]; then
  echo "demo: no data after 90 s; logs:" >&2
  cat "$work"/meshsim-*.log "$work/prometheus.log" >&2
  exit 1
fi

"$bin/meshctl" graph --prometheus-url "$prom" --window "$window"
"$bin/meshctl" graph --prometheus-url "$prom" --window "$window" -o png --out mesh.png
echo
echo "demo: the same graph from mesh-mcp, joined with Kubernetes (kube-sim) and its Linkerd policy:"
for _ in $(seq 1 30); do
  out=$("$bin/meshctl" graph --server "127.0.0.1:$grpc_port" --token "$token" -o wide 2>/dev/null) \
    && grep -q POLICY <<<"$out" && break
  sleep 1
done
echo "${out:-mesh-mcp gave no graph; see $work/mesh-mcp.log}"
echo
echo "demo: wrote mesh.png. Try next, while this runs:"
echo "  $bin/meshctl watch --server 127.0.0.1:$grpc_port --token $token"
echo "  $bin/meshctl apply -f docs/examples/books-from-webapp-only.yaml --server 127.0.0.1:$grpc_port --token $token --dry-run"
echo "    # then without --dry-run; 15 s later authors -> books shows its observed deny rate:"
echo "  $bin/meshctl graph --server 127.0.0.1:$grpc_port --token $token -o wide"
echo "  curl -s 127.0.0.1:$books_port/authz    # what the simulated proxies admit and refuse"
chat="$bin/chatsim slack --bot http://127.0.0.1:$bot_port --stand-in http://127.0.0.1:$chat_port --secret $secret"
echo "  $chat who-calls emojivoto/voting       # Slack: /mesh who-calls ..."
echo "  $chat --form docs/examples/chatbot/voting-from-web-only.yaml   # alice asks; a card with buttons"
echo "  $chat --user U0BOB --click approve:<id from the card>           # bob approves; applied as alice"
echo "  $bin/chatsim discord --bot http://127.0.0.1:$bot_port --stand-in http://127.0.0.1:$chat_port --seed $seed tls"
echo "  curl -s 127.0.0.1:$chat_port/calls   # every Slack/Discord API call the bot made, alerts to C0MESH among them"
echo "  npx @modelcontextprotocol/inspector --cli --tool-arg workload=emojivoto/voting --tool-name who_calls \\"
echo "    --method tools/call -- $bin/mesh-mcp stdio --server 127.0.0.1:$grpc_port --token $token   # MCP"
echo "  curl -s -H 'Authorization: Bearer $token' '127.0.0.1:$http_port/v1/graph?workload=emojivoto/voting'"
echo "  grpcurl -plaintext -H 'authorization: Bearer $token' -d '{\"namespaces\":[\"emojivoto\"]}' \\"
echo "    127.0.0.1:$grpc_port linkerd.mcp.v1.MeshService/GetMeshGraph    # reflection is on"
echo "  $bin/meshctl graph --prometheus-url $prom --window $window -o dot | dot -Tsvg > mesh.svg"
echo "  $bin/meshctl explain --manifests tools/kube-sim/seed/demo --from emojivoto/vote-bot --to emojivoto/voting"
echo "  $bin/meshctl validate -f tools/kube-sim/seed/demo"
echo "  kubectl --server https://127.0.0.1:$kube_port --certificate-authority $work/ca.crt --token $token get servers.policy.linkerd.io -A"
echo "  kubectl --server https://127.0.0.1:$kube_port --certificate-authority $work/ca.crt --token $token --validate=false \\"
echo "    -n emojivoto delete serverauthorizations.policy.linkerd.io internal-grpc   # then watch the verdicts turn"
echo "  curl -s 127.0.0.1:$sim_port/topology > t.yaml; \$EDITOR t.yaml; curl -X PUT --data-binary @t.yaml 127.0.0.1:$sim_port/topology"
if [ "${DEMO_ONCE:-}" = 1 ]; then
  exit 0
fi
echo "demo: press Ctrl-C to stop everything it started."
wait
