#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine by hand (no systemd), for the integration tests.
#
#   tests/slurm/setup.sh STATE_DIR        (as root, on Debian or Ubuntu)
#
# Installs Debian's slurmctld, slurmd, slurm-client and munge when they are missing, then writes
# everything under STATE_DIR (munge key and socket, slurm.conf, spool and state folders, logs),
# starts munged, slurmctld and slurmd in the foreground as background processes, records each PID
# in STATE_DIR/pids/<daemon> as soon as it starts, and waits until the node accepts jobs. Outside
# STATE_DIR only apt-get writes, and /etc/slurm/slurm.conf becomes a link to STATE_DIR/slurm.conf
# (for job steps, which do not see SLURM_CONF); a machine that has a slurm.conf of its own is
# left alone. Clients reach the cluster with SLURM_CONF=STATE_DIR/slurm.conf.
# teardown.sh STATE_DIR stops every daemon by its recorded PID and removes the link.
#
# Environment: SLURMCTLD_PORT, SLURMD_PORT (default 6817, 6818).
# Exit status: 0 when the node is idle and accepts jobs; 77 when this machine cannot run a cluster
# (not root, no apt-get, the install failed, a daemon did not start), with the reason on stderr.
set -euo pipefail

state=${1:?usage: setup.sh STATE_DIR}
ctld_port=${SLURMCTLD_PORT:-6817}
slurmd_port=${SLURMD_PORT:-6818}

cannot() { echo "cannot start a SLURM cluster here: $*" >&2; exit 77; }

[ "$(id -u)" -eq 0 ] || cannot "needs root (to install packages and run slurmd as root)"

install_packages() {
    command -v apt-get >/dev/null || cannot "slurmctld/slurmd/munged are not installed and there is no apt-get"
    # Package scripts must not start services: policy-rc.d answering 101 forbids it (the daemons
    # are started below by hand, with this cluster's own configuration).
    local policy=/usr/sbin/policy-rc.d added_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && added_policy=$policy
    fi
    local log="$state/apt.log" status=0
    { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
          slurmctld slurmd slurm-client munge; } > "$log" 2>&1 || status=$?
    [ -z "$added_policy" ] || rm -f "$added_policy"
    [ "$status" -eq 0 ] || cannot "apt-get install slurmctld slurmd slurm-client munge failed: $(tail -n 3 "$log")"
}

mkdir -p "$state"
state=$(cd "$state" && pwd)
missing=""
for tool in slurmctld slurmd sbatch squeue scontrol munged; do
    command -v "$tool" >/dev/null || missing="$missing $tool"
done
[ -z "$missing" ] || install_packages

mkdir -p "$state/pids" "$state/log" "$state/ctld" "$state/slurmd" "$state/munge"
chmod 700 "$state/munge"

# munged: its own key, socket, PID and seed under STATE_DIR, so a system munged is untouched.
dd if=/dev/urandom of="$state/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$state/munge/munge.key"
socket="$state/munge/munge.socket"
munged --foreground --force --key-file="$state/munge/munge.key" --socket="$socket" \
    --pid-file="$state/munge/munged.pid" --seed-file="$state/munge/munged.seed" \
    --log-file="$state/log/munged.log" > "$state/log/munged.out" 2>&1 < /dev/null &
echo $! > "$state/pids/munged"

wait_for() {  # wait_for SECONDS COMMAND...: poll until COMMAND succeeds, at most SECONDS
    local deadline=$((SECONDS + $1))
    shift
    until "$@" > /dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}
wait_for 10 test -S "$socket" || cannot "munged did not start: $(tail -n 3 "$state/log/munged.log" "$state/log/munged.out" 2>&1)"

# The node as slurmd sees it (CPUs, sockets, cores, threads, memory), so the config matches.
node_line=$(slurmd -C | head -n 1)
node=$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' <<< "$node_line")
cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<< "$node_line")
memory=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<< "$node_line")
[ -n "$node" ] && [ -n "$cpus" ] && [ -n "$memory" ] || cannot "could not read the node from 'slurmd -C': $node_line"

conf_marker="One-node test cluster written by tests/slurm/setup.sh"
cat > "$state/slurm.conf" <<CONF
# $conf_marker; every path lies under $state.
ClusterName=itlin-test
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$socket
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/slurmd
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
# No cgroups (containers rarely allow them) and no accounting database: sacct does not work here,
# so the test profile asks the executor plugin to query squeue, which sees a finished job for
# MinJobAge seconds.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default, a job that names no memory would take the whole node's.
DefMemPerCPU=$((memory / cpus / 2))
# squeue shows a finished job for 300 s: the executor plugin trusts squeue when this is at least
# three times its wait before the first status check (2 s in the test profile).
MinJobAge=300
# A cancelled or pre-empted job gets SIGTERM, then SIGKILL 5 s later (a training run
# checkpoints at its next block on SIGTERM).
KillWait=5
ReturnToService=2
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$state/slurm.conf"

# Inside a job, the executor plugin starts the job's step with `srun` in an environment cleared
# of SLURM_* variables, SLURM_CONF included: srun then reads the compiled-in path, so link it to
# this cluster's config (teardown.sh removes the link). A machine with a SLURM configuration of
# its own is left alone.
system_conf=/etc/slurm/slurm.conf
if [ -L "$system_conf" ] && { [ ! -e "$system_conf" ] || head -n 1 "$system_conf" | grep -q "$conf_marker"; }; then
    other=$(dirname "$(readlink "$system_conf")")
    other_pid=$(cat "$other/pids/slurmctld" 2>/dev/null || true)
    if [ -n "$other_pid" ] && [ "$(cat "/proc/$other_pid/comm" 2>/dev/null)" = slurmctld ]; then
        cannot "another test cluster is running (slurmctld PID $other_pid, state in $other)"
    fi
    rm -f "$system_conf"  # left by a test cluster that was not torn down
fi
[ ! -e "$system_conf" ] && [ ! -L "$system_conf" ] ||
    cannot "$system_conf exists: this machine has a SLURM configuration of its own, which the test cluster would replace"
mkdir -p "$(dirname "$system_conf")"
ln -s "$SLURM_CONF" "$system_conf"

slurmctld -D -i -f "$SLURM_CONF" > "$state/log/slurmctld.out" 2>&1 < /dev/null &
echo $! > "$state/pids/slurmctld"
wait_for 20 scontrol ping ||
    cannot "slurmctld did not answer: $(tail -n 5 "$state/log/slurmctld.log" "$state/log/slurmctld.out" 2>&1)"

slurmd -D -N "$node" -f "$SLURM_CONF" > "$state/log/slurmd.out" 2>&1 < /dev/null &
echo $! > "$state/pids/slurmd"
node_idle() { [ "$(sinfo -h -n "$node" -o %T)" = idle ]; }
wait_for 30 node_idle ||
    cannot "node $node did not become idle ($(sinfo -h -n "$node" -o %T 2>&1)): $(tail -n 5 "$state/log/slurmd.log" "$state/log/slurmd.out" 2>&1)"

echo "SLURM cluster ready: node $node ($cpus CPUs, $memory MB), SLURM_CONF=$SLURM_CONF"
