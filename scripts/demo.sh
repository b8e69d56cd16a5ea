#!/usr/bin/env bash
# make demo: kube-sim seeded with emojivoto, booksapp and their Linkerd policy; simulated
# emojivoto and booksapp meshes (meshsim) that follow that policy as proxies would, scraped by a
# real Prometheus; mesh-mcp with its embedded collector joining the two (policy verdicts per
# edge) and serving the graph over gRPC and HTTP. Everything listens on 127.0.0.1 and is
# stopped on exit.
# DEMO_ONCE=1 exits after writing mesh.png instead of waiting for Ctrl-C.
# DEMO_CHECK=1 (with DEMO_ONCE=1: what `make test` runs) also executes every command it prints, in order, with
# the placeholders filled as a user would fill them, and fails unless each one exits 0.
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
  --with-linkerd-crds --seed tools/kube-sim/seed/demo --seed docs/examples/chatbot-rbac \
  --seed docs/examples/linkerd-2.20 >"$work/kube-sim.log" 2>&1 &
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
# it denies (the collector's read-only identity is all they need). They are Linkerd 2.20's:
# each call also reports its routes; emojivoto's web calls out through an EgressNetwork, and
# its Server is rate limited (docs/examples/linkerd-2.20).
for app in emojivoto:$sim_port booksapp:$books_port; do
  case ${app%%:*} in
    emojivoto) mesh=(--topology docs/examples/meshsim/emojivoto-2.20.yaml) ;;
    *) mesh=(--builtin "${app%%:*}") ;;
  esac
  "$bin/meshsim" "${mesh[@]}" --listen "127.0.0.1:${app##*:}" --linkerd-version 2.20 \
    --kube-url "https://127.0.0.1:$kube_port" --kube-ca "$work/ca.crt" --kube-token collector-token \
    >"$work/meshsim-${app%%:*}.log" 2>&1 &
  pids+=($!)
done
KUBECONFIG="$work/kubeconfig" "$bin/mesh-mcp" --embedded-collector --prometheus-url "$prom" \
  --window "$window" --interval 2s \
  --grpc-listen "127.0.0.1:$grpc_port" --http-listen "127.0.0.1:$http_port" \
  --token-file "$work/tokens.csv" \
  --delegator system:serviceaccount:linkerd-mcp:chatbot --delegate-group devs,mesh-admins \
  --approval-policy docs/examples/approval-policy.yaml \
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
  --alert-slack-channel C0MESH --approval-channel slack:C0MESH >"$work/mesh-chatbot.log" 2>&1 &
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
echo
echo "demo: the same graph from mesh-mcp, joined with Kubernetes (kube-sim) and its Linkerd policy:"
for _ in $(seq 1 30); do
  out=$("$bin/meshctl" graph --server "127.0.0.1:$grpc_port" --token "$token" 2>/dev/null) \
    && grep -q POLICY <<<"$out" && break
  sleep 1
done
echo "${out:-mesh-mcp gave no graph; see $work/mesh-mcp.log}"
"$bin/meshctl" graph --server "127.0.0.1:$grpc_port" --token "$token" -o png --out mesh.png
echo
kube="kubectl --server https://127.0.0.1:$kube_port --certificate-authority $work/ca.crt --token $token"
chat="$bin/chatsim slack --bot http://127.0.0.1:$bot_port --stand-in http://127.0.0.1:$chat_port --secret $secret"
srv="--server 127.0.0.1:$grpc_port --token $token"
# What to try next: each line a command that works on this machine as printed (a comment after
# `#` says what it shows). <id from the card> is the one placeholder: the card prints it.
try=(
  "$bin/meshctl watch $srv    # a snapshot, then each change as it happens (Ctrl-C stops)"
  "$bin/meshctl apply -f docs/examples/books-from-webapp-only.yaml $srv --dry-run    # what would change, and which traffic it would deny"
  "$bin/meshctl apply -f docs/examples/books-from-webapp-only.yaml $srv    # applied as you, audited"
  "$bin/meshctl graph $srv -o wide    # ~15 s later authors -> books shows its observed deny rate"
  "$bin/meshctl routes emojivoto/web $srv    # each route of web's calls, like linkerd viz stat-outbound; 429s from web's rate limit"
  "curl -s 127.0.0.1:$books_port/authz    # what the simulated proxies admit and refuse"
  "$chat who-calls emojivoto/voting    # Slack: /mesh who-calls ..."
  "$chat --form docs/examples/chatbot/voting-from-web-only.yaml    # alice asks; a card with buttons"
  "$chat --user U0BOB --click approve:<id from the card>    # bob approves; applied as alice"
  "$bin/meshctl approvals list $srv    # every approval request (docs/examples/approval-policy.yaml): from chat, agents, meshctl"
  "$bin/meshctl diff $srv --since 5m    # what changed: the policies applied above with who asked and approved, the verdicts they turned"
  "$chat diff 5m    # Slack: /mesh diff 5m, with the picture of the difference"
  "$bin/chatsim discord --bot http://127.0.0.1:$bot_port --stand-in http://127.0.0.1:$chat_port --seed $seed tls"
  "curl -s 127.0.0.1:$chat_port/calls    # every Slack/Discord API call the bot made, alerts to C0MESH among them"
  "npx -y @modelcontextprotocol/inspector@2.12.0 --cli --tool-arg workload=emojivoto/voting --tool-name who_calls --method tools/call -- $bin/mesh-mcp stdio $srv    # MCP"
  "curl -s -H 'Authorization: Bearer $token' '127.0.0.1:$http_port/v1/graph?workload=emojivoto/voting'"
  "curl -s -c \"$work/console.cookies\" -d token=$token -o /dev/null 127.0.0.1:$http_port/ui/login && curl -sf -b \"$work/console.cookies\" -o \"$work/console-graph.json\" '127.0.0.1:$http_port/ui/api/graph?namespace=emojivoto' && head -c 300 \"$work/console-graph.json\" && echo    # the console's feed, signed in as a browser is"
  "$bin/meshctl graph $srv -n emojivoto -o json    # the GetMeshGraph RPC (gRPC reflection is on for other clients)"
  "$bin/meshctl graph $srv -o svg --out mesh.svg    # the picture, with policy verdicts"
  "$bin/meshctl explain --manifests tools/kube-sim/seed/demo --from emojivoto/web --to emojivoto/voting    # why policy admits it"
  "$bin/meshctl validate -f tools/kube-sim/seed/demo -f docs/examples/linkerd-2.20    # offline, against Linkerd's admission rules"
  "$kube get servers.policy.linkerd.io -A"
  "$kube -n emojivoto delete serverauthorizations.policy.linkerd.io internal-grpc    # then watch the verdicts turn"
  "curl -s 127.0.0.1:$sim_port/topology > t.yaml; \$EDITOR t.yaml; curl -X PUT --data-binary @t.yaml 127.0.0.1:$sim_port/topology"
)
echo "demo: the web console: open http://127.0.0.1:$http_port/ui/ and sign in with the token $token (user demo)"
echo "demo: wrote mesh.png. Try next, while this runs:"
for line in "${try[@]}"; do echo "  $line"; done

if [ "${DEMO_CHECK:-}" = 1 ]; then
  # Run each printed line as a user would: in order, from here, filling the card's id from
  # the form's answer; `watch` stops after its snapshot and one more event, the editor saves.
  export EDITOR=true MESH_MAX_EVENTS=2
  passed=0 failed=0 card=""
  for line in "${try[@]}"; do
    cmd=${line//<id from the card>/$card}
    echo "demo-check: $cmd"
    if output=$(timeout 120 bash -c "$cmd" 2>&1); then
      passed=$((passed + 1))
    else
      failed=$((failed + 1))
      echo "demo-check: FAILED (exit $?):" >&2
      printf '%s\n' "$output" | tail -20 >&2
    fi
    if [[ $line == *"--form "* ]]; then
      card=$(grep -o 'button approve:[^]]*' <<<"$output" | head -1 | cut -d: -f2)
      [ -n "$card" ] || echo "demo-check: the form's answer showed no approve button" >&2
    fi
    if [[ $line == *"--click approve:"* ]] && ! grep -q "Applied" <<<"$output"; then
      failed=$((failed + 1))
      echo "demo-check: the approval did not apply:" >&2
      printf '%s\n' "$output" | tail -20 >&2
    fi
  done
  [ -s mesh.svg ] || { failed=$((failed + 1)); echo "demo-check: mesh.svg is empty" >&2; }
  # Logs written to files carry no terminal colour codes.
  if grep -l $'\e\[' "$work"/*.log >&2; then
    failed=$((failed + 1))
    echo "demo-check: colour codes in the log files above" >&2
  fi
  rm -f mesh.svg t.yaml
  echo "demo: $passed passed, $failed failed"
  [ "$failed" = 0 ]
  exit
fi
if [ "${DEMO_ONCE:-}" = 1 ]; then
  exit 0
fi
echo "demo: press Ctrl-C to stop everything it started."
wait
