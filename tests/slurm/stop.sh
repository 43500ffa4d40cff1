#!/usr/bin/env bash
# Stop the single-node SLURM of tests/slurm/start.sh: cancel its jobs, stop slurmd, slurmctld and munged (the
# processes named by their pid files), and wait until none of them runs. Exit 1 if one is still there after 30 s.
set -uo pipefail
state="${VLSIM_SLURM_STATE:-/var/tmp/vlsim-slurm}"
if [ ! -f /etc/slurm/slurm.conf ] || ! grep -q vlsim-test-cluster /etc/slurm/slurm.conf; then
    echo "stop.sh: no single-node SLURM of tests/slurm/start.sh here; nothing stopped"
    exit 0
fi
# only the processes start.sh started, by the pid files it gave them
pidfiles=("$state/slurmd.pid" "$state/slurmctld.pid" "$state/munged.pid")
if [ -s "$state/slurmctld.pid" ] && command -v scancel >/dev/null; then
    timeout 10 scancel --quiet --user=root 2>/dev/null   # the jobs first: their steps end with them
    sleep 1
fi
pids=()
for f in "${pidfiles[@]}"; do
    [ -s "$f" ] || continue
    pid="$(cat "$f")"
    kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" && pids+=("$pid")
done
for _ in $(seq 30); do
    alive=()
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
    [ ${#alive[@]} = 0 ] && break
    sleep 1
done
for pid in "${alive[@]}"; do kill -KILL "$pid" 2>/dev/null; done
rm -f "${pidfiles[@]}"
sleep 1
# a job step's keeper (slurmstepd) ends with its job; anything of the cluster still here is an error
if pgrep -a slurm || pgrep -a munged; then
    echo "stop.sh: processes of the cluster left (above)" >&2
    exit 1
fi
echo "single-node SLURM stopped"
