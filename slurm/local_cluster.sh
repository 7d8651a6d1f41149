#!/usr/bin/env bash
# A real Slurm on one host (slurmctld + munge, with accounting: slurmdbd on a MariaDB) for
# tests and laptops, under one throwaway root. No systemd or cgroups needed; everything runs
# as the current user (root). Accounting is what `sacct` (job states, exit codes, reasons,
# elapsed times) and submitit's job states read.
#
# Two nodes, each its own slurmd on its own port (Debian builds Slurm with multiple-slurmd):
# the host itself, alone in the default partition `debug`, and `localhost` (a name that
# resolves everywhere, as a job's first node must for its tasks to meet there). The
# partition `twonodes` holds both, for real multi-node jobs; both nodes claim every core.
#
#   slurm/local_cluster.sh install   # apt packages (Debian), once per machine
#   slurm/local_cluster.sh start     # writes slurm.conf, starts munged, slurmctld, the slurmds
#   slurm/local_cluster.sh stop      # cancels jobs, stops the daemons
#   slurm/local_cluster.sh env       # prints the exports that point clients at it
#
# MSPLIT_SLURM_ROOT chooses the root (default /tmp/msplit-slurm).
set -euo pipefail

root="${MSPLIT_SLURM_ROOT:-/tmp/msplit-slurm}"
conf="$root/etc/slurm.conf"
host="$(hostname -s)"
nodes=("$host" localhost)
export SLURM_CONF="$conf"

log() { printf 'local_cluster: %s\n' "$*" >&2; }

install_packages() {
    if command -v slurmctld slurmdbd mariadbd munged >/dev/null; then return 0; fi
    log "installing slurmctld slurmd slurmdbd slurm-client munge mariadb-server"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurmdbd slurm-client munge mariadb-server >/dev/null
}

write_config() {
    if [[ $host == localhost ]]; then
        log "this host is called localhost, the second node's name: give it another (hostname)"
        return 1
    fi
    mkdir -p "$root"/{etc,run,log,spool/ctld,munge}
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
StateSaveLocation=$root/spool/ctld
SlurmdSpoolDir=$root/spool/d/%n
SlurmctldPidFile=$root/run/slurmctld.pid
SlurmdPidFile=$root/run/slurmd.%n.pid
SlurmctldLogFile=$root/log/slurmctld.log
SlurmdLogFile=$root/log/slurmd.%n.log
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
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
# slurmctld reaches slurmdbd through munge, and ignores AuthInfo for that connection.
AccountingStoragePass=$root/run/munge.socket
NodeName=${nodes[0]} NodeHostname=${host} NodeAddr=127.0.0.1 Port=6818 CPUs=$(nproc) RealMemory=${mem_mb} State=UNKNOWN
NodeName=${nodes[1]} NodeHostname=${host} NodeAddr=127.0.0.1 Port=6820 CPUs=$(nproc) RealMemory=${mem_mb} State=UNKNOWN
PartitionName=debug Nodes=${nodes[0]} Default=YES MaxTime=INFINITE State=UP
PartitionName=twonodes Nodes=${nodes[0]},${nodes[1]} MaxTime=INFINITE State=UP
CONF
    for node in "${nodes[@]}"; do mkdir -p "$root/spool/d/$node"; done
    cat >"$root/etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$root/run/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3307
StorageUser=slurm
StoragePass=msplit
StorageLoc=slurm_acct_db
LogFile=$root/log/slurmdbd.log
PidFile=$root/run/slurmdbd.pid
CONF
    chmod 0600 "$root/etc/slurmdbd.conf"  # slurmdbd refuses a readable one
}

# MariaDB on 127.0.0.1:3307 with its data under the root, and the accounting database.
start_database() {
    mkdir -p "$root/mysql"
    [[ -d "$root/mysql/mysql" ]] ||
        mariadb-install-db --datadir="$root/mysql" --user=root --skip-test-db >/dev/null
    if ! pgrep -f "mariadbd --datadir=$root/mysql" >/dev/null; then
        mariadbd --datadir="$root/mysql" --socket="$root/run/mysql.sock" --port=3307 \
            --bind-address=127.0.0.1 --pid-file="$root/run/mariadbd.pid" \
            --log-error="$root/log/mariadbd.log" --user=root --skip-name-resolve \
            2>>"$root/log/mariadbd.log" &
        disown
    fi
    for _ in $(seq 1 60); do
        mariadb --socket="$root/run/mysql.sock" -uroot -e "SELECT 1" >/dev/null 2>&1 && break
        sleep 0.25
    done
    mariadb --socket="$root/run/mysql.sock" -uroot -e "
        CREATE DATABASE IF NOT EXISTS slurm_acct_db;
        CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'msplit';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

start_accounting() {
    start_database
    pgrep -f "^slurmdbd" >/dev/null || slurmdbd
    for _ in $(seq 1 60); do
        sacctmgr -n list cluster >/dev/null 2>&1 && break
        sleep 0.25
    done
    sacctmgr -n list cluster format=cluster | grep -qw msplit ||
        sacctmgr -i add cluster msplit >/dev/null
}

start() {
    install_packages
    write_config
    if ! [[ -S "$root/run/munge.socket" ]] || ! pgrep -f "munged.*$root" >/dev/null; then
        munged --key-file="$root/munge/munge.key" --socket="$root/run/munge.socket" \
            --pid-file="$root/run/munged.pid" --log-file="$root/log/munged.log" \
            --seed-file="$root/munge/munge.seed" --force
    fi
    # -c: a controller started afresh forgets the jobs of an earlier cluster under this root.
    start_accounting
    pgrep -f "slurmctld -f $conf" >/dev/null || slurmctld -f "$conf" -c
    for node in "${nodes[@]}"; do
        pgrep -f "slurmd -f $conf -N $node\$" >/dev/null || slurmd -f "$conf" -N "$node"
    done
    for _ in $(seq 1 60); do
        # Up once both nodes answer, whether or not they already run jobs.
        if scontrol ping >/dev/null 2>&1 &&
            [[ $(sinfo -h -N -p twonodes -o %T 2>/dev/null | grep -Ecx 'idle|mixed|allocated') \
                == "${#nodes[@]}" ]]; then
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
    local user pids=() alive=()
    user="$(id -un)"
    scancel --full --quiet --user="$user" 2>/dev/null || true
    # Cancelled steps end while their slurmd is up to clean them up (up to 15 s).
    for _ in $(seq 30); do
        [[ -z "$(squeue --noheader --user="$user" 2>/dev/null)" ]] && break
        sleep 0.5
    done
    for pidfile in "${nodes[@]/#/slurmd.}" slurmctld slurmdbd mariadbd munged; do
        if [[ -f "$root/run/$pidfile.pid" ]]; then
            pids+=("$(cat "$root/run/$pidfile.pid")")
        fi
    done
    ((${#pids[@]})) && kill "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 20); do  # each daemon's own shutdown, up to 10 s
        alive=()
        for pid in "${pids[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then alive+=("$pid"); fi
        done
        ((${#alive[@]})) || break
        sleep 0.5
    done
    if ((${#alive[@]})); then
        log "killing daemons still running after 10 s: ${alive[*]}"
        kill -9 "${alive[@]}" 2>/dev/null || true
    fi
    # A step stuck in its cleanup outlives its slurmd (every slurmstepd here is this
    # cluster's: it runs the host's only slurmds).
    if pkill -KILL -x slurmstepd 2>/dev/null; then log "killed leftover job steps"; fi
    log "stopped"
}

case "${1:-}" in
    install) install_packages ;;
    start) start ;;
    stop) stop ;;
    env) echo "export SLURM_CONF=$conf" ;;
    *) echo "usage: $0 install|start|stop|env" >&2; exit 2 ;;
esac
