#!/usr/bin/env bash
# Demo: build the agent, start the stand-in clearml-server on loopback,
# register a worker, then run `list` and `config` against it.
set -euo pipefail
cd "$(dirname "$0")/.."
addr=${DEMO_ADDR:-127.0.0.1:18008}

CGO_ENABLED=0 go build -o clearml-agent .
go build -o "${TMPDIR:-/tmp}/clearml-stand-in" ./testdata/clearml-server
"${TMPDIR:-/tmp}/clearml-stand-in" -addr "$addr" -seed-demo >/dev/null &
server=$!
trap 'kill $server 2>/dev/null' EXIT
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null && break
  sleep 0.1
done

export HOME=$(mktemp -d)
cat > "$HOME/clearml.conf" <<CONF
api {
  api_server: "http://$addr"
  credentials { "access_key": "EGRTCO8JMSIGI6S39GTP43NFWXDQOW", "secret_key": "LPEJbGJ6bK4tujQcmrD3i1dbMBDdwUwelVa-LG0K0FFmY9bzH_H0Sw" }
}
CONF
# A worker, registered the way a daemon does, so `list` has something to show.
curl -s -u EGRTCO8JMSIGI6S39GTP43NFWXDQOW:LPEJbGJ6bK4tujQcmrD3i1dbMBDdwUwelVa-LG0K0FFmY9bzH_H0Sw \
  -H 'Content-Type: application/json' -d '{"worker":"demo-box:cpu:0"}' "http://$addr/workers.register" >/dev/null || true

echo "\$ clearml-agent list"
./clearml-agent list
echo "\$ clearml-agent config | head"
./clearml-agent config | head -n 8
