#!/usr/bin/env bash
# test_mariadb.sh - MariaDB end to end against real servers: a private instance (temp datadir,
# socket, loopback port, binlog ROW), `coffer mariadb backup` (mariadb-dump streamed into a
# snapshot tagged with the binlog position), `binlog-push` (closed binlogs archived,
# idempotent), point-in-time `restore --time T` into a second instance (exactly the rows
# committed before T), restore of the latest state, and failing dumps (wrong socket; a dump
# without its trailer) that publish nothing and exit non-zero.
# Skips (exit 77) without MariaDB unless COFFER_REQUIRE_DATABASES contains "mariadb".
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export TZ=UTC

figure() { printf '# figure: %s\n' "$*"; }
elapsed() { python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$(date +%s.%N)"; }

my_skip() { db_skip mariadb "$1"; }

have_all() {
    command -v mariadbd >/dev/null 2>&1 || [[ -x /usr/sbin/mariadbd ]] || return 1
    local p
    for p in mariadb mariadb-dump mariadb-binlog mariadb-admin mariadb-install-db; do
        command -v "$p" >/dev/null 2>&1 || return 1
    done
}

export PATH="$PATH:/usr/sbin:/sbin"
if ! have_all; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "# installing mariadb-server mariadb-client" >&2
        apt-get update -q -o DPkg::Lock::Timeout=120 </dev/null >/dev/null 2>&1
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            -o DPkg::Lock::Timeout=120 mariadb-server mariadb-client </dev/null >"$TMP/apt.log" 2>&1
    fi
    have_all || my_skip "cannot install mariadb-server/mariadb-client"
fi
id mysql >/dev/null 2>&1 || my_skip "no 'mysql' OS user"

freeport() {
    local p=$1
    while ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; do p=$((p + 1)); done
    echo "$p"
}
MY="$TMP/my"
mkdir -p "$MY/i1/binlog" "$MY/i2"
PORT=$(freeport 33069)
PORT2=$(freeport $((PORT + 1)))
mkcnf() { # DIR PORT EXTRA
    cat <<EOF
[client]
socket = $1/mariadbd.sock
user = root
[mariadbd]
user = mysql
datadir = $1/data
socket = $1/mariadbd.sock
pid-file = $1/mariadbd.pid
port = $2
bind-address = 127.0.0.1
skip-name-resolve
log-error = $1/error.log
innodb_buffer_pool_size = 64M
innodb_log_file_size = 16M
$3
EOF
}
mkcnf "$MY/i1" "$PORT" "server-id = 1
log-bin = $MY/i1/binlog/mysql-bin
binlog_format = ROW" >"$MY/my.cnf"
mkcnf "$MY/i2" "$PORT2" "skip-log-bin" >"$MY/my2.cnf"
chown -R mysql:mysql "$MY/i1" "$MY/i2"

stop_inst() { # CNF PIDFILE
    [[ -f "$2" ]] || return 0
    local pid i
    pid=$(cat "$2")
    mariadb-admin --defaults-file="$1" shutdown >/dev/null 2>&1 || kill "$pid" 2>/dev/null
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null
    return 0
}
my_cleanup() {
    set +e
    stop_inst "$MY/my2.cnf" "$MY/i2/mariadbd.pid"
    stop_inst "$MY/my.cnf" "$MY/i1/mariadbd.pid"
    _cleanup
}
trap my_cleanup EXIT

start_inst() { # CNF INSTDIR
    local i
    mariadb-install-db --defaults-file="$1" --user=mysql --skip-test-db \
        --auth-root-authentication-method=socket >"$2/install.log" 2>&1 || return 1
    (cd / && mariadbd --defaults-file="$1" >/dev/null 2>&1 &)
    for i in $(seq 1 300); do
        mariadb-admin --defaults-file="$1" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}
SQL() { mariadb --defaults-file="$MY/my.cnf" -N -B -e "$1"; }
SQL2() { mariadb --defaults-file="$MY/my2.cnf" -N -B -e "$1"; }

t0=$(date +%s.%N)
start_inst "$MY/my.cnf" "$MY/i1" || { tail -n 20 "$MY/i1/error.log" >&2; my_skip "cannot start mariadbd"; }
start_inst "$MY/my2.cnf" "$MY/i2" || { tail -n 20 "$MY/i2/error.log" >&2; my_skip "cannot start a second mariadbd"; }
figure "two instances installed and started: $(elapsed "$t0") s ($(SQL 'select version()'))"
SQL "create database app; create table app.t(id int primary key, ts datetime(6) default now(6)) engine=innodb;
     insert into app.t(id) select seq from app.seq_1_to_100;" || my_skip "cannot run SQL on the test instance"

REPO="$TMP/repo"
new_repo "$REPO"
cfr() { "$COFFER" --repo "$REPO" "$@"; }
nsnaps() { "$COFFER" --repo "$REPO" --json snapshots | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }

case_backup() {
    local t
    t=$(date +%s.%N)
    expect_exit 0 cfr --json mariadb backup --defaults-file "$MY/my.cnf" --databases app || return 1
    figure "mariadb backup (100 rows, --databases app): $(elapsed "$t") s"
    SNAP=$(json_get "$OUT" "j['snapshot_id']")
    BFILE=$(json_get "$OUT" "j['binlog_file']")
    BPOS=$(json_get "$OUT" "j['binlog_pos']")
    check "binlog file '$BFILE' is not mysql-bin.NNNNNN" test "${BFILE#mysql-bin.}" != "$BFILE"
    expect_exit 0 cfr --json snapshots || return 1
    check "snapshot is not tagged binlog=$BFILE:$BPOS" \
        test "$(json_get "$OUT" "[s['tags'] for s in j if s['id'].startswith('${SNAP:0:8}')][0]")" = "[\"binlog=$BFILE:$BPOS\"]"
    expect_exit 0 cfr cat snapshot "$SNAP" || return 1
    check "snapshot has no mariadb.binlog_pos" \
        test "$(json_get "$OUT" "j['mariadb']['binlog_pos'] == $BPOS and j['source']['kind']")" = mariadb
    expect_exit 0 cfr dump "$SNAP" /dump.sql || return 1
    output_has "^-- Dump completed" "the stored dump has no trailer"
    output_has "INSERT INTO .t. VALUES" "the stored dump has no rows"
}

case_more_rows_and_push() {
    sleep 1.2
    T=$(date -u '+%Y-%m-%d %H:%M:%S') # binlog times have 1 s resolution
    sleep 1.2
    SQL "insert into app.t(id) select seq from app.seq_101_to_200; flush binary logs;" || return 1
    local t
    t=$(date +%s.%N)
    expect_exit 0 cfr --json mariadb binlog-push --defaults-file "$MY/my.cnf" --binlog-dir "$MY/i1/binlog" || return 1
    figure "binlog-push: $(elapsed "$t") s, $(json_get "$OUT" "j['stored']") binlogs, $(json_get "$OUT" "j['bytes']") bytes"
    check "binlog-push stored nothing" test "$(json_get "$OUT" "j['stored'] >= 1")" = True
    check "the dump's binlog $BFILE was not archived" test -n "$(find "$REPO/archive/mysqlbinlog/default" -name "$BFILE")"
    # idempotent; and the binlog directory comes from the server when not given
    expect_exit 0 cfr --json mariadb binlog-push --defaults-file "$MY/my.cnf" || return 1
    check "a second binlog-push stored again" test "$(json_get "$OUT" "j['stored']")" = 0
}

case_restore_pitr() {
    local t
    t=$(date +%s.%N)
    expect_exit 0 cfr mariadb restore --defaults-file "$MY/my2.cnf" --time "$T" || return 1
    figure "restore --time (dump + binlog replay): $(elapsed "$t") s"
    local n m
    n=$(SQL2 "select count(*) from app.t")
    m=$(SQL2 "select max(id) from app.t")
    check "restore to T gave $n rows (max $m), want 100" test "$n:$m" = "100:100"
}

case_restore_latest() {
    local t
    t=$(date +%s.%N)
    expect_exit 0 cfr mariadb restore --defaults-file "$MY/my2.cnf" || return 1
    figure "restore latest: $(elapsed "$t") s"
    local n
    n=$(SQL2 "select count(*) from app.t")
    check "restore of the latest gave $n rows, want 200" test "$n" = 200
}

case_failing_dump() {
    local before after
    before=$(nsnaps)
    expect_exit 1 cfr mariadb backup --defaults-file "$MY/my.cnf" --socket "$MY/nonexistent.sock" --databases app || return 1
    output_has "mariadb-dump failed" "no message naming the failed dumper"
    # a dumper that exits 0 but stops before its trailer
    mkdir -p "$TMP/fakebin"
    cat >"$TMP/fakebin/mariadb-dump" <<'EOF'
#!/bin/sh
echo "-- MariaDB dump 10.19"
echo "-- CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000001', MASTER_LOG_POS=4;"
echo "CREATE TABLE half (i int);"
exit 0
EOF
    chmod +x "$TMP/fakebin/mariadb-dump"
    expect_exit 1 cfr mariadb backup --mariadb-bindir "$TMP/fakebin" --databases app || return 1
    output_has "Dump completed" "no message about the missing trailer"
    # a binlog position that is not archived: loud, with a hint
    after=$(nsnaps)
    check "a failed dump published a snapshot ($before -> $after)" test "$before" = "$after"
}

case_missing_binlog() {
    # a dump newer than every archived binlog cannot be rolled forward: refused, not ignored
    expect_exit 0 cfr mariadb backup --defaults-file "$MY/my.cnf" --databases app || return 1
    expect_exit 1 cfr mariadb restore --defaults-file "$MY/my2.cnf" || return 1
    output_has "is not archived" "no message about the missing binlog"
    expect_exit 0 cfr mariadb restore --defaults-file "$MY/my2.cnf" --dump-only || return 1
    check "dump-only restore does not have 200 rows" test "$(SQL2 'select count(*) from app.t')" = 200
}

case_all_and_list() {
    expect_exit 0 cfr --json mariadb backup --defaults-file "$MY/my.cnf" --tag all || return 1
    local id
    id=$(json_get "$OUT" "j['snapshot_id']")
    expect_exit 0 cfr dump "$id" /dump.sql || return 1
    output_has "^-- Current Database: .mysql." "an --all-databases dump without the mysql schema"
    expect_exit 0 cfr mariadb list || return 1
    output_has "${id:0:8} .* binlog mysql-bin\.[0-9]+:[0-9]+ +\(all\)" "list does not show the dump"
    output_has "binlog default/mysql-bin\." "list does not show archived binlogs"
}

run_case "mariadb backup: dump streamed, binlog position recorded and tagged" case_backup
run_case "binlog-push: closed binlogs archived, idempotent" case_more_rows_and_push
run_case "restore --time T: dump + binlog replay gives the rows before T" case_restore_pitr
run_case "restore latest: every archived binlog replayed" case_restore_latest
run_case "failing dumps exit non-zero and publish nothing" case_failing_dump
run_case "restore refuses a dump whose binlog is not archived" case_missing_binlog
run_case "backup of all databases; list shows dumps and binlogs" case_all_and_list
finish
