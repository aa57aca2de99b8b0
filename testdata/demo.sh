#!/usr/bin/env bash
# Demo of the agent's main job without a real clearml-server: build the
# agent, start the stand-in server on loopback with one queued task (from a
# local git repo made here), run `clearml-agent daemon` until the task is
# done, then show the worker list and the task's final status.
set -euo pipefail
cd "$(dirname "$0")/.."
addr=${DEMO_ADDR:-127.0.0.1:18008}
work=$(mktemp -d)
trap 'kill $server $daemon 2>/dev/null || true; rm -rf "$work"' EXIT
server= daemon=

CGO_ENABLED=0 go build -o clearml-agent .
go build -o "$work/stand-in" ./testdata/clearml-server

# The task's code: a git repository with one script.
mkdir "$work/repo"
cat > "$work/repo/train.py" <<'PY'
import os, time
print("hello from task", os.environ["CLEARML_TASK_ID"])
for epoch in range(3):
    print("epoch", epoch, "loss", 1.0 / (epoch + 1), flush=True)
    time.sleep(0.2)
PY
git -C "$work/repo" init -q
git -C "$work/repo" add -A
git -C "$work/repo" -c user.name=demo -c user.email=demo@localhost commit -q -m demo

"$work/stand-in" -addr "$addr" -demo-repo "$work/repo" -demo-entry train.py > "$work/server.out" &
server=$!
for _ in $(seq 100); do grep -q listening "$work/server.out" 2>/dev/null && break; sleep 0.1; done
task=$(sed -n 's/^seeded demo task \([0-9a-f]*\).*/\1/p' "$work/server.out")

export HOME="$work/home" && mkdir -p "$HOME"
cat > "$HOME/clearml.conf" <<CONF
api {
  api_server: "http://$addr"
  credentials { "access_key": "EGRTCO8JMSIGI6S39GTP43NFWXDQOW", "secret_key": "LPEJbGJ6bK4tujQcmrD3i1dbMBDdwUwelVa-LG0K0FFmY9bzH_H0Sw" }
}
CONF

echo "\$ clearml-agent daemon --queue default --foreground   (task $task is queued)"
./clearml-agent daemon --queue default --foreground > "$work/daemon.out" 2>&1 &
daemon=$!
for _ in $(seq 1200); do grep -q "DONE: Running task" "$work/daemon.out" && break; sleep 0.1; done
sed -n '/Listening to queues/,$p' "$work/daemon.out"
echo
echo "\$ clearml-agent list"
./clearml-agent list
kill -TERM $daemon && wait $daemon || true
daemon=
echo "task $task: $(curl -s -u EGRTCO8JMSIGI6S39GTP43NFWXDQOW:LPEJbGJ6bK4tujQcmrD3i1dbMBDdwUwelVa-LG0K0FFmY9bzH_H0Sw \
  -H 'Content-Type: application/json' -d "{\"task\":\"$task\"}" "http://$addr/tasks.get_by_id" |
  python3 -c 'import json,sys; t=json.load(sys.stdin)["data"]["task"]; print(t["status"], "-", t.get("status_reason",""))')"
