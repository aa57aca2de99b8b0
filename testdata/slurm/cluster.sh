#!/usr/bin/env bash
# A one-node SLURM cluster on localhost for the `clearml-agent slurm` tests.
#
#   testdata/slurm/cluster.sh start    write the config, start munged, slurmctld, slurmd; wait until a job runs
#   testdata/slurm/cluster.sh stop     cancel every job, stop the daemons, leave no process behind
#   testdata/slurm/cluster.sh status   exit 0 when the node answers and is usable, 1 otherwise
#   testdata/slurm/cluster.sh env      print `export SLURM_CONF=...` for the clients (sbatch, squeue, ...)
#
# State lives in $CLEARML_SLURM_HOME (default /tmp/clearml-slurm): slurm.conf,
# the munge key and socket, spool and state folders, logs (log/), the job
# completion file (jobcomp.txt). Ports: $CLEARML_SLURM_CTLD_PORT (6817) and
# $CLEARML_SLURM_SLURMD_PORT (6818). Needs Debian's slurm-wlm and munge, and root.
#
# Choices for a container without systemd (Debian 12, SLURM 22.05), root only:
# - Process tracking and memory limits, $CLEARML_SLURM_CGROUP=auto|v1|none
#   (auto: v1 when the cgroup v1 memory and freezer controllers are mounted
#   and writable, as in this VM; none otherwise). The choice is written to
#   $CLEARML_SLURM_HOME/mode and shown by `status`.
#   * v1: proctrack/cgroup + task/cgroup with cgroup.conf CgroupPlugin=cgroup/v1,
#     ConstrainRAMSpace=yes. The kernel enforces --mem and SLURM reports
#     JobState=OUT_OF_MEMORY Reason=OutOfMemory, as on a production cluster.
#     cgroup/v2 is not offered: 22.05 wants systemd (dbus) to delegate it.
#   * none: proctrack/linuxproc tracks a step's processes through the parent
#     tree in /proc (proctrack/pgid would lose anything that calls setsid);
#     task/none binds nothing. --mem is enforced by jobacct_gather/linux with
#     JobAcctGatherParams=OverMemoryKill (RSS polled every second), which kills
#     the step but reports the batch step as FAILED (Reason=JobLaunchFailure,
#     ExitCode=0:9) and an srun step as "task 0: Killed": no OUT_OF_MEMORY state.
# - Accounting: 22.05 has only accounting_storage/none and /slurmdbd (filetxt
#   is gone) and slurmdbd needs MySQL, so plain `sacct` says "Slurm accounting
#   storage is disabled", as on a cluster without slurmdbd. Instead:
#   * `scontrol show job ID` and `squeue --states=all` keep a finished job with
#     its JobState, Reason and ExitCode for MinJobAge (1 hour here; the
#     default is 5 minutes), across slurmctld restarts (StateSaveLocation);
#   * jobcomp/filetxt appends one line per finished job to jobcomp.txt, which
#     `sacct -c` (--completion) reads, e.g.
#     `sacct -c -n -P -o JobID,JobName,State,ExitCode -j ID` (-c ignores --name;
#     a requeued job has a line per run, the last counts).
#     It has the state but no reason; the state is the reason for CANCELLED,
#     TIMEOUT, OUT_OF_MEMORY and NODE_FAIL.
# - Quick TIMEOUT tests: time limits are whole minutes (`--time=0:01` rounds up
#   to one) and slurmctld checks them every 30 s, so such a job ends TIMEOUT
#   (Reason=TimeLimit) 60-90 s after it starts. OverTimeLimit=0 and KillWait=2
#   end it 2 s after the SIGTERM.
# - NODE_FAIL: `scontrol update nodename=clearml-node state=down reason=...`
#   kills the running jobs; a job submitted with --no-requeue ends NODE_FAIL
#   (Reason=NodeDown), one without is requeued (JobRequeue defaults to 1).
#   ReturnToService=2 brings the node back at once (start also resumes it).
# - Right after slurmctld starts, a batch job waits ~3 s for its first
#   scheduling pass (srun does not), so `start` runs one probe job and waits
#   for it before it returns.
# - SchedulerParameters=batch_sched_delay=0,sched_min_interval=0: a job starts
#   when it is submitted, not after the default 3 s batching delay.
# - SelectTypeParameters=CR_Core_Memory with DefMemPerCPU: memory is a
#   consumable resource, so --mem is enforced and a job without --mem does not
#   take the whole node. The node has the machine's CPUs and memory
#   (slurmd -C, memory less 10% for the daemons); on a one-CPU machine it
#   claims 2 CPUs (SlurmdParameters=config_overrides) so --ntasks=2 still runs.
# - The daemons run as root (SlurmUser=root) from this state folder; munged has
#   its own key and socket (AuthInfo=socket=...), so a system munged is
#   untouched. The daemons carry CLEARML_SLURM_CLUSTER=<state folder> in their
#   environment; slurmstepd clears its environment but runs in <state>/log.
#   `stop` cancels every job, shuts the daemons down and then ends only those
#   processes (and a step's children), never anything else.
# - `start` on a partly running cluster (say slurmctld was killed to test an
#   outage) starts only the missing daemons: jobs and their state survive.
set -euo pipefail

STATE=${CLEARML_SLURM_HOME:-/tmp/clearml-slurm}
CTLD_PORT=${CLEARML_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${CLEARML_SLURM_SLURMD_PORT:-6818}
NODE=clearml-node
CONF=$STATE/slurm.conf
export SLURM_CONF=$CONF

die() { echo "cluster.sh: $*" >&2; exit 1; }

need_tools() {
  local missing=()
  for t in munged mungekey slurmctld slurmd sbatch squeue scontrol scancel sinfo flock; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  [ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}: apt-get install slurm-wlm munge"
  [ "$(id -u)" = 0 ] || die "must run as root (the daemons run as root with SlurmUser=root)"
}

# alive PID: the process exists and is not a zombie (pid 1 here reaps slowly).
alive() {
  local stat
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# pid_of NAME: the pid in $STATE/NAME.pid when that process is alive and is NAME.
pid_of() {
  local f=$STATE/run/$1.pid pid
  [ -s "$f" ] || return 1
  pid=$(tr -dc 0-9 <"$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] && alive "$pid" || return 1
  echo "$pid"
}

# ours: pids of live processes started for this state folder: the daemons
# (marked in their environment), slurmstepd (runs in $STATE/log), the job
# processes below them, and anything in this node's cgroups.
ours() {
  local p cwd comm steps=()
  for p in /proc/[0-9]*; do
    alive "${p#/proc/}" || continue
    if grep -qzxF "CLEARML_SLURM_CLUSTER=$STATE" "$p/environ" 2>/dev/null; then
      echo "${p#/proc/}"
    elif { read -r comm <"$p/comm"; } 2>/dev/null && [ "$comm" = slurmstepd ]; then
      cwd=$(readlink "$p/cwd" 2>/dev/null || true)
      case "$cwd" in "$STATE"|"$STATE"/*) echo "${p#/proc/}"; steps+=("${p#/proc/}") ;; esac
    fi
  done
  [ ${#steps[@]} -eq 0 ] || descendants "${steps[@]}"
  for p in $(cat /sys/fs/cgroup/freezer/slurm_"$NODE"/uid_*/job_*/step_*/cgroup.procs 2>/dev/null); do
    alive "$p" && echo "$p"
  done
  return 0
}

# descendants PID...: every process below the given ones.
descendants() {
  local kids
  kids=$(ps -e -o pid=,ppid=,stat= | awk -v want=" $* " 'index(want, " " $2 " ") && $3 !~ /^Z/ { print $1 }')
  [ -n "$kids" ] || return 0
  echo "$kids"
  # shellcheck disable=SC2086
  descendants $kids
}

node_state() { timeout 10 sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n1; }

healthy() {
  pid_of munged >/dev/null && pid_of slurmctld >/dev/null && pid_of slurmd >/dev/null || return 1
  case "$(node_state)" in
    idle|mixed|allocated|completing) return 0 ;;
  esac
  return 1
}

# cgroup_mode: v1 or none (see the header).
cgroup_mode() {
  local want=${CLEARML_SLURM_CGROUP:-auto} c probe
  case "$want" in
    v1|none) echo "$want"; return ;;
    auto) ;;
    *) die "CLEARML_SLURM_CGROUP=$want: use auto, v1 or none" ;;
  esac
  for c in memory freezer; do
    [ "$(stat -f -c %T "/sys/fs/cgroup/$c" 2>/dev/null)" = cgroupfs ] || { echo none; return; }
    probe=/sys/fs/cgroup/$c/clearml-slurm-probe.$$
    mkdir "$probe" 2>/dev/null || { echo none; return; }
    rmdir "$probe"
  done
  echo v1
}

write_conf() {
  local hw cpus boards sockets cores threads mem
  hw=$(slurmd -C 2>/dev/null | head -n1)
  field() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$hw"; }
  cpus=$(field CPUs); boards=$(field Boards); sockets=$(field SocketsPerBoard)
  cores=$(field CoresPerSocket); threads=$(field ThreadsPerCore); mem=$(field RealMemory)
  [ -n "$cpus" ] && [ -n "$mem" ] || die "slurmd -C did not report CPUs and RealMemory: $hw"
  local topo="Boards=$boards SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads"
  if [ "$cpus" -lt 2 ]; then
    cpus=2 topo="Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1"
  fi
  # Leave some memory to the daemons so a job that fills its allocation does not starve them.
  mem=$((mem * 9 / 10))
  local defmem=$((mem / cpus / 4))
  [ "$defmem" -gt 1024 ] && defmem=1024
  local mode tracking
  mode=$(cgroup_mode)
  echo "$mode" >"$STATE/mode"
  if [ "$mode" = v1 ]; then
    tracking="ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup"
    printf '%s\n' "# Written by testdata/slurm/cluster.sh." CgroupPlugin=cgroup/v1 \
      ConstrainRAMSpace=yes ConstrainSwapSpace=yes AllowedSwapSpace=0 >"$STATE/cgroup.conf"
  else
    tracking="ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherParams=OverMemoryKill"
    rm -f "$STATE/cgroup.conf"
  fi
  cat >"$CONF" <<EOF
# Written by testdata/slurm/cluster.sh; rewritten at every start.
ClusterName=clearml
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$STATE/plugstack.conf
$tracking
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/jobcomp.txt
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$defmem
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=3600
KillWait=2
OverTimeLimit=0
InactiveLimit=0
MessageTimeout=10
SlurmdTimeout=30
Waittime=0
NodeName=$NODE NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 CPUs=$cpus $topo RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  : >"$STATE/plugstack.conf"
}

start_munge() {
  pid_of munged >/dev/null && return 0
  [ -s "$STATE/munge/munge.key" ] || mungekey --create --keyfile="$STATE/munge/munge.key" >/dev/null
  chmod 0400 "$STATE/munge/munge.key"
  rm -f "$STATE/munge/munge.socket" "$STATE/munge/munge.socket.lock"
  # --force: the state folder may sit under the world-writable /tmp.
  CLEARML_SLURM_CLUSTER=$STATE munged --force 9>&- \
    --socket="$STATE/munge/munge.socket" --key-file="$STATE/munge/munge.key" \
    --pid-file="$STATE/run/munged.pid" --seed-file="$STATE/munge/munged.seed" \
    --log-file="$STATE/log/munged.log" ||
    die "munged did not start: see $STATE/log/munged.log"
}

# probe_job: submit a no-op batch job and wait until it has run (sbatch
# --wait polls every few seconds; this polls faster).
probe_job() {
  local id state i
  id=$(timeout 30 sbatch --parsable --job-name=cluster-ready --output=/dev/null --wrap=true) || return 1
  for i in $(seq 1 300); do
    state=$(timeout 10 squeue -h --states=all -j "$id" -o %T 2>/dev/null || true)
    case "$state" in
      COMPLETED) return 0 ;;
      FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL) return 1 ;;
    esac
    sleep 0.2
  done
  return 1
}

# launch: start whichever daemon is not running. The daemons fork into the
# background themselves and write their pid files.
launch() {
  start_munge
  if ! pid_of slurmctld >/dev/null; then
    CLEARML_SLURM_CLUSTER=$STATE slurmctld -f "$CONF" 9>&- ||
      die "slurmctld did not start: see $STATE/log/slurmctld.log"
  fi
  if ! pid_of slurmd >/dev/null; then
    CLEARML_SLURM_CLUSTER=$STATE slurmd -f "$CONF" -N "$NODE" 9>&- ||
      die "slurmd did not start: see $STATE/log/slurmd.log"
  fi
}

# wait_ready: the node takes jobs. Right after slurmctld starts, a batch job
# waits for its first scheduling pass (~3 s; srun does not), so one probe job
# runs first unless the node is full.
wait_ready() {
  local i state=""
  for i in $(seq 1 120); do
    state=$(node_state || true)
    case "$state" in
      idle|mixed|allocated)
        if [ "$state" != allocated ]; then
          probe_job || die "a probe batch job did not run within 60s; logs in $STATE/log"
        fi
        echo "cluster.sh: node $NODE $state and taking jobs after $((i / 4))s; export SLURM_CONF=$CONF"
        return 0 ;;
      down*|drain*|fail*|inval*)
        # A node left down by an earlier run (e.g. a NODE_FAIL test) comes back.
        timeout 10 scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.25
  done
  tail -n 20 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
  die "node $NODE not ready after 30s (state: ${state:-no answer}); logs in $STATE/log"
}

do_start() {
  need_tools
  mkdir -p "$STATE"
  exec 9>"$STATE/lock"
  flock -w 120 9 || die "another cluster.sh holds $STATE/lock"
  if healthy; then echo "cluster.sh: already running ($CONF)"; return 0; fi
  if [ -s "$CONF" ] && { pid_of munged || pid_of slurmctld || pid_of slurmd; } >/dev/null; then
    # Some daemons run (one was killed, e.g. an outage test): start the
    # others with the same config; running jobs and the queue survive.
    launch
    wait_ready
    return 0
  fi
  stop_all quiet
  mkdir -p "$STATE"/{munge,ctld,spool,run,log}
  chmod 0700 "$STATE/munge"
  write_conf
  launch
  wait_ready
}

# stop_all [quiet]: cancel jobs, stop the daemons, then end any process left
# from this state folder (job steps outlive slurmd by design).
stop_all() {
  local i name pid
  if pid_of slurmctld >/dev/null; then
    timeout 10 scancel --quiet --full --partition=debug >/dev/null 2>&1 || true
    # Let the steps end through slurmd (it is what kills them), if it is there.
    for i in $(seq 1 40); do
      pid_of slurmd >/dev/null || break
      [ -z "$(timeout 5 squeue -h -t running,completing,configuring -o %i 2>/dev/null)" ] && break
      sleep 0.25
    done
    timeout 10 scontrol shutdown >/dev/null 2>&1 || true
  fi
  for i in $(seq 1 40); do
    pid_of slurmctld >/dev/null || pid_of slurmd >/dev/null || break
    sleep 0.25
  done
  for name in slurmd slurmctld munged; do
    pid=$(pid_of "$name") && kill -TERM "$pid" 2>/dev/null || true
  done
  for i in $(seq 1 40); do
    [ -z "$(ours)" ] && break
    if [ "$i" -eq 20 ]; then
      for pid in $(ours); do kill -KILL "$pid" 2>/dev/null || true; done
    fi
    sleep 0.25
  done
  [ -z "$(ours)" ] || die "processes left after stop: $(ours | tr '\n' ' ')"
  rm -f "$STATE"/run/*.pid
  # Empty job cgroups left by slurmd (a non-empty one stays: rmdir refuses).
  find /sys/fs/cgroup/*/slurm_"$NODE" -depth -type d -exec rmdir {} + 2>/dev/null || true
  [ "${1:-}" = quiet ] || echo "cluster.sh: stopped"
}

do_stop() {
  [ -d "$STATE" ] || { echo "cluster.sh: not running"; return 0; }
  exec 9>"$STATE/lock"
  flock -w 120 9 || die "another cluster.sh holds $STATE/lock"
  stop_all
}

do_status() {
  local name
  for name in munged slurmctld slurmd; do
    printf '%-10s %s\n' "$name" "$(pid_of "$name" || echo 'not running')"
  done
  local node="(slurmctld not running)"
  if pid_of slurmctld >/dev/null; then node=$(node_state || true); fi
  printf '%-10s %s\n' node "$node"
  printf '%-10s %s\n' cgroup "$(cat "$STATE/mode" 2>/dev/null || echo unknown)"
  healthy
}

case "${1:-}" in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
