#!/usr/bin/env bash
# Start a single-node SLURM on this machine for the launcher's tests (and for trying --launcher slurm by hand):
# installs the Debian packages if they are missing (root only), writes a munge key and /etc/slurm/slurm.conf
# from slurm.conf.in (one node with this machine's CPUs and memory, partition `debug`, no accounting), starts
# munged, slurmctld and slurmd, and waits until `sinfo` says the node is idle.
# Exit 0: the cluster is up (`sinfo` printed). Exit 3: it cannot start here (not root, no apt-get, packages not
# found, a slurm.conf of another cluster); the reason is printed and nothing is left running.
# tests/slurm/stop.sh stops it. State and logs: $VLSIM_SLURM_STATE (default /var/tmp/vlsim-slurm).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
state="${VLSIM_SLURM_STATE:-/var/tmp/vlsim-slurm}"
conf=/etc/slurm/slurm.conf

cannot() { echo "single-node SLURM: cannot start here: $*" >&2; "$here/stop.sh" >/dev/null 2>&1; exit 3; }

[ "$(id -u)" = 0 ] || cannot "not root (the daemons and /etc/slurm need it)"
if [ -f "$conf" ] && ! grep -q vlsim-test-cluster "$conf"; then
    cannot "$conf belongs to another cluster; not touching it"
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
        || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || cannot "no apt-get to install slurmctld slurmd slurm-client munge"
    echo "installing slurmctld slurmd slurm-client munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null 2>&1 || cannot "apt-get update failed (no network?)"
    apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null 2>&1 \
        || cannot "apt-get install slurmctld slurmd slurm-client munge failed"
fi
"$here/stop.sh" >/dev/null 2>&1   # a cluster left by an earlier run

# munge: a key readable by the munge user only, its daemon running as that user
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
mkdir -p "$state" && chmod 0755 "$state"
touch "$state/munged.pid" && chown munge:munge "$state/munged.pid"
runuser -u munge -- /usr/sbin/munged --pid-file="$state/munged.pid" || cannot "munged did not start"
munge -n | unmunge >/dev/null || cannot "munge does not verify its own credential"

# slurm.conf: this machine's CPUs and memory (a little under the total, or slurmd drains the node)
host="$(hostname -s)"
cpus="$(nproc)"
mem="$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)"
rm -rf "$state/ctld" "$state/d" && mkdir -p "$state/ctld" "$state/d" /etc/slurm
sed -e "s|@HOST@|$host|g" -e "s|@CPUS@|$cpus|g" -e "s|@MEM@|$mem|g" -e "s|@STATE@|$state|g" \
    -e "s|@CTLD_PORT@|${VLSIM_SLURMCTLD_PORT:-6817}|g" -e "s|@D_PORT@|${VLSIM_SLURMD_PORT:-6818}|g" \
    "$here/slurm.conf.in" > "$conf"
echo "# vlsim-test-cluster" > /etc/slurm/cgroup.conf

slurmctld -i || cannot "slurmctld did not start (see $state/slurmctld.log)"   # -i: no state from before
slurmd || cannot "slurmd did not start (see $state/slurmd.log)"
for _ in $(seq 60); do
    if sinfo -h -o "%t" 2>/dev/null | grep -qx idle; then
        sinfo
        exit 0
    fi
    sleep 1
done
tail -5 "$state/slurmctld.log" "$state/slurmd.log" >&2
cannot "the node is not idle after 60 s (sinfo: $(sinfo -h 2>&1 | head -1))"
