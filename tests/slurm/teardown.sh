#!/usr/bin/env bash
# Stop the cluster that setup.sh started in STATE_DIR: cancel its jobs, end each daemon by the
# PID recorded in STATE_DIR/pids/ (SIGTERM, then SIGKILL after 10 s), and remove the link
# /etc/slurm/slurm.conf -> STATE_DIR/slurm.conf. Safe to run after a partial setup, and twice.
#
#   tests/slurm/teardown.sh STATE_DIR
set -uo pipefail

state=${1:?usage: teardown.sh STATE_DIR}
[ -d "$state/pids" ] || exit 0
export SLURM_CONF="$state/slurm.conf"

alive() {  # alive DAEMON: its recorded PID is running and is still that daemon
    local pid
    pid=$(cat "$state/pids/$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]
}

# Jobs first, while slurmctld and slurmd can still end them (their steps are slurmstepd
# processes of their own, which would outlive slurmd).
if alive slurmctld && [ -f "$SLURM_CONF" ]; then
    jobs=$(squeue -h -o %i 2>/dev/null)
    if [ -n "$jobs" ]; then
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null
        for _ in $(seq 100); do
            [ -z "$(squeue -h -t PENDING,RUNNING,SUSPENDED,COMPLETING,CONFIGURING -o %i 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
fi

for daemon in slurmd slurmctld munged; do
    alive "$daemon" || continue
    pid=$(cat "$state/pids/$daemon")
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do
        alive "$daemon" || break
        sleep 0.2
    done
    if alive "$daemon"; then
        echo "teardown: $daemon (PID $pid) ignored SIGTERM; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null
    fi
done

system_conf=/etc/slurm/slurm.conf
if [ -L "$system_conf" ] && [ "$(readlink "$system_conf")" = "$SLURM_CONF" ]; then
    rm -f "$system_conf"
fi
exit 0
