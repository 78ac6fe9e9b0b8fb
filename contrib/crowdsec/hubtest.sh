#!/usr/bin/env bash
# Runs this directory's CrowdSec hub tests (`.tests/*`) with `cscli hubtest`, offline.
#
#   contrib/crowdsec/hubtest.sh [BASE_HUB]
#
# `cscli hubtest` resolves every item a test names through a hub's `.index.json`, which the
# hub's own CI generates. So this builds a throwaway hub: BASE_HUB (default: the copy Debian's
# `crowdsec` package ships, which holds `crowdsecurity/syslog-logs` and `dateparse-enrich`), our
# parser, scenarios, collection and tests laid over it, and index entries for our items added.
# Prints cscli's table; exits non-zero if any test fails. Nothing outside the temporary hub
# (and cscli's own runtime directories inside it) is written.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
base=${1:-/usr/share/crowdsec/hub}
[ -f "$base/.index.json" ] || { echo "no hub index at $base/.index.json" >&2; exit 2; }
hub=$(mktemp -d)
trap 'rm -rf "$hub"' EXIT
cp -r "$base/." "$hub/"
for d in parsers scenarios collections .tests; do cp -r "$here/$d" "$hub/"; done

# Index entries for our items, in the hub's format: path, version, digest of the content, the
# content and its .md (base64), description, author; stage for parsers, members for collections.
python3 - "$hub" <<'PY'
import base64, hashlib, json, os, re, sys

hub = sys.argv[1]
index_path = os.path.join(hub, ".index.json")
index = json.load(open(index_path))

def field(text, key):
    m = re.search(rf'^{key}:\s*"?(.*?)"?\s*$', text, re.M)
    return m.group(1) if m else ""

def members(text, key):
    m = re.search(rf"^{key}:\n((?:\s+- .*\n)+)", text, re.M)
    return [line.split("- ", 1)[1].strip() for line in m.group(1).splitlines()] if m else []

for kind in ("parsers", "scenarios", "collections"):
    for root, _, files in os.walk(os.path.join(hub, kind)):
        for f in files:
            if not f.endswith(".yaml"):
                continue
            path = os.path.relpath(os.path.join(root, f), hub)
            parts = path.split(os.sep)
            author, name = parts[-2], f[: -len(".yaml")]
            if author != "sentrypeer":
                continue
            raw = open(os.path.join(hub, path), "rb").read()
            md = os.path.join(hub, path[: -len(".yaml")] + ".md")
            long = open(md, "rb").read() if os.path.exists(md) else b""
            text = raw.decode()
            entry = {
                "path": path,
                "version": "0.1",
                "versions": {"0.1": {"digest": hashlib.sha256(raw).hexdigest(), "deprecated": False}},
                "long_description": base64.b64encode(long).decode(),
                "content": base64.b64encode(raw).decode(),
                "description": field(text, "description"),
                "author": author,
                "labels": None,
            }
            if kind == "parsers":
                entry["stage"] = parts[1]
            if kind == "collections":
                for k in ("parsers", "scenarios", "postoverflows"):
                    if members(text, k):
                        entry[k] = members(text, k)
            index.setdefault(kind, {})[f"{author}/{name}"] = entry

json.dump(index, open(index_path, "w"))
PY

# What each test's runtime starts from (cscli copies these into `.tests/NAME/runtime/` and runs
# crowdsec from `.tests/NAME/`, hence the relative paths). The local API gets a port that is free
# now; no metrics listener.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$hub/.tests/template_config.yaml" <<YAML
common:
  daemonize: false
  log_media: file
  log_level: info
  log_dir: ./runtime/log/
  working_dir: .
config_paths:
  config_dir: ./runtime/
  data_dir: ./runtime/data/
  simulation_path: ./runtime/simulation.yaml
  hub_dir: ./runtime/hub/
  index_path: ./runtime/hub/.index.json
crowdsec_service:
  parser_routines: 1
db_config:
  type: sqlite
  db_path: ./runtime/data/crowdsec.db
  use_wal: false
api:
  client:
    credentials_path: ./runtime/local_api_credentials.yaml
  server:
    listen_uri: 127.0.0.1:$port
    profiles_path: ./runtime/profiles.yaml
prometheus:
  enabled: false
YAML
cp /etc/crowdsec/profiles.yaml "$hub/.tests/template_profiles.yaml"
printf 'simulation: off\nexclusions: []\n' > "$hub/.tests/template_simulation.yaml"

cd "$hub"
cscli hubtest run --all --clean --hub "$hub" --crowdsec "$(command -v crowdsec)" --cscli "$(command -v cscli)"
