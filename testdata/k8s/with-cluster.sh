#!/usr/bin/env bash
# usage: testdata/k8s/with-cluster.sh CMD [ARGS...]
# ../shared/k8s/with-cluster.sh next to the repository (or $K8S_SHARED/with-cluster.sh) with the glue tests'
# extra kwok stages (kwok-outcomes.yaml: pods that fail, are OOM-killed, evicted, or wait
# in ImagePullBackOff). The shared script starts "$K8S_TEST_HOME/bin/kwok" with its one
# stage file; this wrapper points K8S_TEST_HOME at a folder whose kwok adds ours, and
# whose other binaries are the built ones, except kube-apiserver: a shim that restarts it when a
# test kills it (K8S_TEST_APISERVER_PIDFILE). Exit status: CMD's.
set -u
here="$(cd "$(dirname "$0")" && pwd)"
shared="${K8S_SHARED:-$(cd "$here/../../.." && pwd)/shared/k8s}"
[ -x "$shared/with-cluster.sh" ] || { echo "with-cluster: no $shared/with-cluster.sh; set K8S_SHARED to the folder of build.sh and with-cluster.sh" >&2; exit 1; }
home="${K8S_TEST_HOME:-$HOME/.cache/clearml-k8s-test}"
[ -x "$home/bin/kwok" ] || { echo "with-cluster: run $shared/build.sh first" >&2; exit 1; }
shim=$(mktemp -d "${TMPDIR:-/tmp}/k8s-shim.XXXXXX")
trap 'rm -rf "$shim"' EXIT
mkdir "$shim/bin"
for b in "$home"/bin/*; do ln -s "$b" "$shim/bin/"; done
rm "$shim/bin/kwok"
printf '#!/usr/bin/env bash\nexec %q "$@" --config=%q\n' "$home/bin/kwok" "$here/kwok-outcomes.yaml" > "$shim/bin/kwok"
chmod +x "$shim/bin/kwok"
# A restartable API server: a test kills the pid in $K8S_TEST_APISERVER_PIDFILE and the shim
# starts it again with the same flags (same etcd: nothing is lost); SIGTERM to the shim stops both.
export K8S_TEST_APISERVER_PIDFILE="$shim/apiserver.pid"
rm "$shim/bin/kube-apiserver"
cat > "$shim/bin/kube-apiserver" <<SHIM
#!/usr/bin/env bash
trap 'kill \$(cat "$K8S_TEST_APISERVER_PIDFILE") 2>/dev/null; wait; exit 0' TERM INT
while :; do
  "$home/bin/kube-apiserver" "\$@" & echo \$! > "$K8S_TEST_APISERVER_PIDFILE"
  wait \$!
  sleep 0.5
done
SHIM
chmod +x "$shim/bin/kube-apiserver"
K8S_TEST_HOME="$shim" "$shared/with-cluster.sh" "$@"
