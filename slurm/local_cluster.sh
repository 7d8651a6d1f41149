#!/usr/bin/env bash
# A real single-node Slurm (slurmctld + slurmd + munge) for tests and laptops, under one
# throwaway root. No systemd or cgroups needed; everything runs as the current user (root).
#
#   slurm/local_cluster.sh install   # apt packages (Debian), once per machine
#   slurm/local_cluster.sh start     # writes slurm.conf, starts munged, slurmctld, slurmd
#   slurm/local_cluster.sh stop      # cancels jobs, stops the daemons
#   slurm/local_cluster.sh env       # prints the exports that point clients at it
#
# MSPLIT_SLURM_ROOT chooses the root (default /tmp/msplit-slurm).
set -euo pipefail

root="${MSPLIT_SLURM_ROOT:-/tmp/msplit-slurm}"
conf="$root/etc/slurm.conf"
host="$(hostname -s)"
export SLURM_CONF="$conf"

log() { printf 'local_cluster: %s\n' "$*" >&2; }

install_packages() {
    if command -v slurmctld >/dev/null && command -v munged >/dev/null; then return 0; fi
    log "installing slurmctld slurmd slurm-client munge"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
}

write_config() {
    mkdir -p "$root"/{etc,run,log,spool/ctld,spool/d,munge}
    chmod 0700 "$root/munge"
    chmod 0755 "$root/run"  # munged refuses a 0700 socket directory
    [[ -f "$root/munge/munge.key" ]] || {
        dd if=/dev/urandom of="$root/munge/munge.key" bs=1024 count=1 status=none
        chmod 0400 "$root/munge/munge.key"
    }
    local mem_mb
    mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    cat >"$conf" <<CONF
ClusterName=msplit
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$root/run/munge.socket
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$root/spool/ctld
SlurmdSpoolDir=$root/spool/d
SlurmctldPidFile=$root/run/slurmctld.pid
SlurmdPidFile=$root/run/slurmd.pid
SlurmctldLogFile=$root/log/slurmctld.log
SlurmdLogFile=$root/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
DependencyParameters=kill_invalid_depend
ReturnToService=2
MinJobAge=300
KillWait=5
JobCompType=jobcomp/filetxt
JobCompLoc=$root/log/jobcomp.txt
NodeName=${host} NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=${mem_mb} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF
}

start() {
    install_packages
    write_config
    if ! [[ -S "$root/run/munge.socket" ]] || ! pgrep -f "munged.*$root" >/dev/null; then
        munged --key-file="$root/munge/munge.key" --socket="$root/run/munge.socket" \
            --pid-file="$root/run/munged.pid" --log-file="$root/log/munged.log" \
            --seed-file="$root/munge/munge.seed" --force
    fi
    pgrep -f "slurmctld -f $conf" >/dev/null || slurmctld -f "$conf"
    pgrep -f "slurmd -f $conf" >/dev/null || slurmd -f "$conf"
    for _ in $(seq 1 60); do
        if scontrol ping >/dev/null 2>&1 && sinfo -h -o %T 2>/dev/null | grep -qx idle; then
            log "up: SLURM_CONF=$conf"
            return 0
        fi
        sleep 0.5
    done
    log "slurm did not come up; logs in $root/log"
    tail -n 20 "$root"/log/*.log >&2 || true
    return 1
}

stop() {
    [[ -f "$conf" ]] || return 0
    scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
    for pidfile in slurmd slurmctld munged; do
        if [[ -f "$root/run/$pidfile.pid" ]]; then
            kill "$(cat "$root/run/$pidfile.pid")" 2>/dev/null || true
        fi
    done
    sleep 1
    log "stopped"
}

case "${1:-}" in
    install) install_packages ;;
    start) start ;;
    stop) stop ;;
    env) echo "export SLURM_CONF=$conf" ;;
    *) echo "usage: $0 install|start|stop|env" >&2; exit 2 ;;
esac
