#!/usr/bin/env bash
# Installs the Debian packages linkerd-mcp's tests and demo need, when missing:
# redis-server, prometheus (with promtool), victoria-metrics (with vmalert), DejaVu fonts (text in PNG pictures), kubectl,
# Chromium with chromedriver (the console's browser tests), Python's venv and Node.js; and
# the official MCP Python SDK into .tools/mcp-venv.
# Runs `apt-get update` at most once. Needs root (CI runs as root) or sudo.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# The system's root certificates: mesh-chatbot's Slack client loads them at start.
[ -e /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
# kube-sim's tests drive kubectl as an independent client (Debian's package when none is present).
command -v kubectl >/dev/null 2>&1 || need+=(kubernetes-client)
# The collector's tests read VictoriaMetrics (single node, its own scraper) as well as
# Prometheus; vmalert, in the same package, evaluates the recording rules there.
command -v victoria-metrics >/dev/null 2>&1 || need+=(victoria-metrics)
command -v vmalert >/dev/null 2>&1 || need+=(victoria-metrics)

# The console's tests drive Debian's Chromium, headless, through its WebDriver (chromedriver).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)

# The MCP conformance suite runs on Node.js (npm installs it into .tools/conformance).
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
# The MCP tests drive mesh-mcp with the official Python SDK, in a virtual environment here.
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)

if [ ${#need[@]} -gt 0 ]; then
  # Unique, in order.
  mapfile -t need < <(printf '%s\n' "${need[@]}" | awk '!seen[$0]++')
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Python tools in virtual environments under .tools, each reinstalled when its pins change:
# the official MCP SDK (the MCP tests' client), and a real Helm engine plus Kubernetes'
# schemas (the chart check).
venv() {
  local dir pins
  dir="$(dirname "$0")/../.tools/$1"; shift
  pins="$*"
  if [ "$(cat "$dir/.pins" 2>/dev/null)" != "$pins" ]; then
    echo "deps: installing $pins into .tools/$(basename "$dir")"
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check "$@"
    echo "$pins" >"$dir/.pins"
  fi
}
venv mcp-venv mcp==2.3.0
venv helm-venv helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 PyYAML==6.0.3
