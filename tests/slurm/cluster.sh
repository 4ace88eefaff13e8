#!/usr/bin/env bash
# A throwaway single-node SLURM cluster on this machine, with job accounting, for
# tests/test_slurm.py. Everything the cluster needs (configuration, state, logs, database, munge
# key and socket) lives under one folder; start and stop change nothing under /etc and touch no
# system service.
#
#   cluster.sh install     install slurm-wlm, slurmdbd, munge and mariadb-server if missing
#                          (Debian/Ubuntu, as root; services are kept from starting on install)
#   cluster.sh start DIR   configure and start munged, mariadbd, slurmdbd, slurmctld and slurmd
#                          for this machine only (127.0.0.1, free ports); prints SLURM_CONF=...
#                          and PATH_PREFIX=... (a folder to put first on PATH)
#   cluster.sh stop DIR    cancel the cluster's jobs and stop every daemon `start DIR` started
#                          (by the pid files under DIR); safe to call more than once
#
# The node offers 2 stand-in GPUs (gres on /dev/null and /dev/zero: SLURM drops GPUs without a
# device file), so that jobs asking for `--gpus=1` (what snakemake-executor-plugin-slurm makes of
# `resources: gpu=1`) are granted, and one partition named `gpu`, as profiles/slurm expects.
# sacct reads the jobs from slurmdbd, which stores them in a private MariaDB server.
set -euo pipefail

PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)
PY=${PYTHON:-python3}

die() { echo "cluster.sh: $*" >&2; exit 1; }

install() {
    [ "$(id -u)" = 0 ] || die "install needs root"
    export PATH=$PATH:/usr/sbin:/sbin
    local missing=() cmd
    for cmd in slurmctld slurmd slurmdbd sacct munged mariadbd mariadb-install-db; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
    done
    if [ ${#missing[@]} = 0 ] && [ -z "${CLUSTER_FORCE_INSTALL:-}" ]; then
        echo "already installed"
        return 0
    fi
    command -v apt-get >/dev/null || die "no apt-get: install ${PACKAGES[*]} by hand (missing: ${missing[*]})"
    # Keep the packages' own services from starting (this script starts private daemons).
    local policy=/usr/sbin/policy-rc.d made_policy=0 rc=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod 755 "$policy"
        made_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null; } || rc=$?
    if [ $made_policy = 1 ]; then rm -f "$policy"; fi
    [ $rc = 0 ] || die "apt-get failed ($rc)"
    echo "installed ${PACKAGES[*]}"
}

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2; shift 2
    for _ in $(seq $((limit * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "$what did not come up within ${limit}s (logs: $DIR/log/)"
}

port_open() { "$PY" -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$1"; }

start() {
    [ "$(id -u)" = 0 ] || die "start needs root"
    export PATH=$PATH:/usr/sbin:/sbin
    mkdir -p "$DIR"/{etc,state,spool,log,db,munge,run}
    chmod 755 "$DIR/munge"
    local node cpus p_ctld p_d p_dbd p_db
    node=$(hostname -s)
    cpus=$(nproc)
    p_ctld=$(free_port); p_d=$(free_port); p_dbd=$(free_port); p_db=$(free_port)
    local sock=$DIR/munge/munge.socket

    # munge: private key and socket
    dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$DIR/munge/munge.key"
    munged --force --socket="$sock" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed"
    wait_for 10 munged test -S "$sock"

    # MariaDB for slurmdbd: a private server on a free port, no grant tables (localhost only)
    mariadb-install-db --no-defaults --datadir="$DIR/db" --user=root --skip-test-db \
        --auth-root-authentication-method=normal >"$DIR/log/mariadb-install.log" 2>&1
    mariadbd --no-defaults --datadir="$DIR/db" --user=root --port="$p_db" --bind-address=127.0.0.1 \
        --socket="$DIR/run/mysql.sock" --pid-file="$DIR/run/mariadbd.pid" --skip-grant-tables \
        --innodb-buffer-pool-size=16M --log-error="$DIR/log/mariadb.log" >/dev/null 2>&1 &
    wait_for 60 mariadbd port_open "$p_db"

    cat > "$DIR/etc/slurm.conf" <<CONF
ClusterName=icepick
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$p_ctld
SlurmdPort=$p_d
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$sock
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
ReturnToService=2
MinJobAge=300
InactiveLimit=0
KillWait=5
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
AccountingStoreFlags=job_comment
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$p_dbd
AccountingStoragePass=$sock
AccountingStorageTRES=gres/gpu
SlurmdParameters=config_overrides
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=64000 Gres=gpu:2 State=UNKNOWN
PartitionName=gpu Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
    # GPUs need device files: two character devices that every machine has stand in for them
    printf 'NodeName=%s Name=gpu File=/dev/null\nNodeName=%s Name=gpu File=/dev/zero\n' "$node" "$node" > "$DIR/etc/gres.conf"
    cat > "$DIR/etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$sock
DbdHost=localhost
DbdPort=$p_dbd
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$p_db
StorageUser=root
StorageLoc=slurm_acct_db
CONF
    chmod 600 "$DIR/etc/slurmdbd.conf"
    export SLURM_CONF=$DIR/etc/slurm.conf

    slurmdbd
    wait_for 60 slurmdbd port_open "$p_dbd"
    sacctmgr -i add cluster icepick >/dev/null 2>&1 || true
    slurmctld -i
    wait_for 60 slurmctld scontrol ping
    slurmd -N "$node"
    wait_for 60 "the node" sh -c "sinfo -h -N -o %t | grep -Eq '^(idle|mix|alloc)'"
    # snakemake-executor-plugin-slurm-jobstep drops SLURM_* variables (SLURM_CONF too) before its
    # `srun` inside a job; a real cluster has /etc/slurm/slurm.conf, this one a wrapper on PATH.
    mkdir -p "$DIR/bin"
    printf '#!/bin/sh\nSLURM_CONF=%s exec %s "$@"\n' "$SLURM_CONF" "$(command -v srun)" > "$DIR/bin/srun"
    chmod 755 "$DIR/bin/srun"
    echo "SLURM_CONF=$SLURM_CONF"
    echo "PATH_PREFIX=$DIR/bin"
}

stop() {
    export PATH=$PATH:/usr/sbin:/sbin
    export SLURM_CONF=$DIR/etc/slurm.conf
    if [ -f "$DIR/run/slurmctld.pid" ] && kill -0 "$(cat "$DIR/run/slurmctld.pid")" 2>/dev/null; then
        scancel --full "--user=$(id -un)" >/dev/null 2>&1 || true
        for _ in $(seq 50); do
            [ -z "$(squeue -h 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
    local name pid
    for name in slurmd slurmctld slurmdbd mariadbd munged; do
        [ -f "$DIR/run/$name.pid" ] || continue
        pid=$(cat "$DIR/run/$name.pid")
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        rm -f "$DIR/run/$name.pid"
    done
}

cmd=${1:-}
case "$cmd" in
    install) install ;;
    start|stop)
        [ -n "${2:-}" ] || die "usage: cluster.sh $cmd DIR"
        DIR=$(realpath -m "$2")
        "$cmd" ;;
    *) die "usage: cluster.sh install | start DIR | stop DIR" ;;
esac
