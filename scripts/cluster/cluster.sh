#!/usr/bin/env bash
# A one-node SLURM cluster (munge, slurmctld, slurmd) and a PostgreSQL server on this machine,
# for the `cluster` and `postgres` tests and the search benchmark. Needs root (apt, daemons).
#
#   scripts/cluster/cluster.sh up      install what is missing, start both, write the state file
#   scripts/cluster/cluster.sh down    stop every daemon `up` started
#   scripts/cluster/cluster.sh status  print the state file
#
# `up` never fails: a piece that cannot be installed or started is recorded as
# `slurm=<reason>` / `postgres=<reason>` in $PRICENET_CLUSTER_DIR/state, and the tests that need
# it skip with that reason. The SLURM config is generated for this host (name, CPUs, memory),
# without cgroups (proctrack/linuxproc, task/none: fine in a container). `sacct` needs
# slurmdbd, and slurmdbd needs MySQL/MariaDB (it cannot use PostgreSQL): a MariaDB on its unix
# socket holds the accounting (submitit polls sacct for job states, so it is not optional).
set -uo pipefail

DIR=${PRICENET_CLUSTER_DIR:-/tmp/pricenet-cluster}
STATE=$DIR/state
SLURM_CONF=/etc/slurm/slurm.conf
PG_VERSION=15
PG_PORT=${PRICENET_PG_PORT:-5432}
PG_USER=pricenet
PG_PASSWORD=pricenet
PG_DB=pricenet
MARK="# written by pricenet scripts/cluster/cluster.sh"

APT_ERROR=""
log() { echo "cluster: $*" >&2; }
record() { sed -i "/^$1=/d" "$STATE" 2>/dev/null; echo "$1=$2" >>"$STATE"; }

wait_for() {  # wait_for SECONDS CMD...: true once CMD succeeds
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

install() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld slurmd slurm-client munge)
    command -v slurmdbd >/dev/null || missing+=(slurmdbd mariadb-server)
    command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
    ((${#missing[@]})) || return 0
    if [[ $(id -u) != 0 ]]; then
        APT_ERROR="not root: cannot install ${missing[*]}"
        return 1
    fi
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # The daemons are started below, by hand: no init system runs in a container.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    { timeout 180 apt-get update -qq &&
        timeout 300 apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
        >"$DIR/apt.log" 2>&1
    local rc=$?
    rm -f /usr/sbin/policy-rc.d
    ((rc == 0)) || APT_ERROR="apt failed (exit $rc): $(grep -E '^(E|W):' "$DIR/apt.log" | tail -1)"
    return $rc
}

slurm_up() {
    if ! command -v slurmctld >/dev/null; then
        record slurm "slurm-wlm is not installed${APT_ERROR:+; $APT_ERROR}"
        return
    fi
    if [[ -f $SLURM_CONF ]] && ! grep -qF "$MARK" "$SLURM_CONF"; then
        record slurm "$SLURM_CONF exists and is not ours: not touching a real cluster"
        return
    fi
    local host node
    host=$(hostname -s)
    node=$(slurmd -C | head -1)  # NodeName=<host> CPUs=... RealMemory=...
    mkdir -p "$DIR/slurm/state" "$DIR/slurm/spool" /etc/slurm
    cat >"$SLURM_CONF" <<EOF
$MARK
ClusterName=pricenet
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/slurm/state
SlurmdSpoolDir=$DIR/slurm/spool
SlurmctldPidFile=$DIR/slurm/slurmctld.pid
SlurmdPidFile=$DIR/slurm/slurmd.pid
SlurmctldLogFile=$DIR/slurm/slurmctld.log
SlurmdLogFile=$DIR/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/slurm/jobcomp.log
MinJobAge=3600
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=5
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    sed -i 's/ UpTime=[^ ]*//' "$SLURM_CONF"
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null
    if [[ ! -s /etc/munge/munge.key ]]; then
        mungekey --create >/dev/null 2>&1 && chown munge /etc/munge/munge.key
    fi
    pgrep -x munged >/dev/null || runuser -u munge -- munged || {
        record slurm "munged did not start"; return; }
    munge -n | unmunge >/dev/null 2>&1 || { record slurm "munge cannot encode and decode"; return; }
    accounting_up || return
    slurmctld -c >"$DIR/slurm/slurmctld.out" 2>&1 || {
        record slurm "slurmctld did not start: $(tail -1 "$DIR/slurm/slurmctld.out")"; return; }
    slurmd >"$DIR/slurm/slurmd.out" 2>&1 || {
        record slurm "slurmd did not start: $(tail -1 "$DIR/slurm/slurmd.log")"; return; }
    if ! wait_for 30 bash -c "sinfo -h -o %t | grep -qx idle"; then
        record slurm "the node never became idle: $(sinfo -h -o '%t %E' 2>&1 | head -1)"
        return
    fi
    if ! timeout 60 srun -N1 -n1 -t 1 true >/dev/null 2>&1; then
        record slurm "a test job (srun true) did not run"
        return
    fi
    record slurm up
}

accounting_up() {  # MariaDB (unix socket, root by socket auth) and slurmdbd on top of it
    if ! command -v slurmdbd >/dev/null; then
        record slurm "slurmdbd is not installed${APT_ERROR:+; $APT_ERROR}"
        return 1
    fi
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    if ! pgrep -x mariadbd >/dev/null; then
        mariadbd --user=mysql --skip-networking --pid-file=/run/mysqld/pricenet.pid \
            >"$DIR/mariadb.log" 2>&1 &
    fi
    if ! wait_for 30 mariadb -e "SELECT 1"; then
        record slurm "MariaDB (for slurmdbd) did not start"
        return 1
    fi
    cat >/etc/slurm/slurmdbd.conf <<EOF
$MARK
AuthType=auth/munge
DbdAddr=127.0.0.1
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=pricenet_slurm_acct
PidFile=$DIR/slurm/slurmdbd.pid
LogFile=$DIR/slurm/slurmdbd.log
EOF
    chmod 600 /etc/slurm/slurmdbd.conf
    slurmdbd >"$DIR/slurm/slurmdbd.out" 2>&1 || {
        record slurm "slurmdbd did not start: $(tail -1 "$DIR/slurm/slurmdbd.log")"; return 1; }
    wait_for 30 sacctmgr -n list cluster || { record slurm "slurmdbd does not answer"; return 1; }
    sacctmgr -i add cluster pricenet >/dev/null 2>&1
    return 0
}

postgres_up() {
    if ! command -v pg_ctlcluster >/dev/null; then
        record postgres "postgresql is not installed${APT_ERROR:+; $APT_ERROR}"
        return
    fi
    pg_lsclusters -h | grep -q "^$PG_VERSION main" ||
        pg_createcluster -p "$PG_PORT" "$PG_VERSION" main >/dev/null ||
        { record postgres "pg_createcluster failed"; return; }
    pg_ctlcluster "$PG_VERSION" main start 2>/dev/null
    if ! wait_for 30 pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; then
        record postgres "the server did not accept connections on 127.0.0.1:$PG_PORT"
        return
    fi
    local sql="DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='$PG_USER') THEN
        CREATE ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD' CREATEDB; END IF; END\$\$;"
    local exists="SELECT 1 FROM pg_database WHERE datname='$PG_DB'"
    if ! runuser -u postgres -- psql -qp "$PG_PORT" -c "$sql" >/dev/null ||
        ! { runuser -u postgres -- psql -qtp "$PG_PORT" -c "$exists" | grep -q 1 ||
            runuser -u postgres -- createdb -p "$PG_PORT" -O "$PG_USER" "$PG_DB"; }; then
        record postgres "could not create the role and database"
        return
    fi
    record postgres up
    record postgres_url "postgresql+psycopg2://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
    record postgres_restart "pg_ctlcluster $PG_VERSION main restart"
}

up() {
    mkdir -p "$DIR"
    : >"$STATE"
    local start=$SECONDS
    install || log "$APT_ERROR"
    record install_s $((SECONDS - start))
    start=$SECONDS
    slurm_up
    record slurm_start_s $((SECONDS - start))
    start=$SECONDS
    postgres_up
    record postgres_start_s $((SECONDS - start))
    log "$(tr '\n' ' ' <"$STATE")"
}

running() {  # the daemons of `up` that still run (pgrep matches at most 15 characters)
    ps -eo comm= | grep -xE 'slurmd|slurmctld|slurmdbd|slurmstepd|mariadbd|munged|postgres' |
        sort -u | tr '\n' ' '
}

running_none() { [[ -z $(running) ]]; }

down() {
    local pid
    if grep -qF "$MARK" "$SLURM_CONF" 2>/dev/null && pgrep -x slurmctld >/dev/null; then
        scancel --full --user="$(id -un)" 2>/dev/null  # jobs a failed test left behind
        wait_for 15 bash -c '[[ -z $(squeue -h) ]]'
    fi
    for name in slurmd slurmctld slurmdbd; do
        pid=$(cat "$DIR/slurm/$name.pid" 2>/dev/null) && kill "$pid" 2>/dev/null
    done
    if command -v pg_ctlcluster >/dev/null; then
        pg_ctlcluster "$PG_VERSION" main stop -m fast 2>/dev/null
    fi
    pid=$(cat /run/mysqld/pricenet.pid 2>/dev/null) && kill "$pid" 2>/dev/null
    pid=$(cat /run/munge/munged.pid 2>/dev/null) && kill "$pid" 2>/dev/null
    wait_for 30 running_none || log "still running: $(running)"
    [[ -f $STATE ]] && sed -i -E 's/^(slurm|postgres)=up$/\1=stopped/' "$STATE"
    log "stopped"
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) cat "$STATE" 2>/dev/null ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
