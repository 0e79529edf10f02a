#!/usr/bin/env bash
# test_pg.sh - PostgreSQL end to end against a real server: WAL archived by
# archive_command = 'coffer wal-push', base backups through pg_basebackup, point-in-time
# recovery to a time (exactly the rows committed before it) and to the end of the archive,
# dedup of a second base backup, 'pg check' finding a gap, wal-push/wal-fetch contracts
# (idempotent, conflicting, missing, damaged) and a pg_dump/pg_restore round trip.
# Skips (exit 77) without PostgreSQL unless COFFER_REQUIRE_DATABASES contains "postgres".
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/pg_lib.sh"

pg_require

REPO="$PGROOT/repo"
PW="$PGROOT/password"
CONF="$PGROOT/coffer.env"
T_START=$(date +%s.%N)

# The repository belongs to the server's OS user: archive_command runs as that user.
as_pg mkdir "$REPO"
printf '%s\n' "$COFFER_PASSWORD" | as_pg tee "$PW" >/dev/null
as_pg chmod 600 "$PW"
printf 'COFFER_REPO=%s\nCOFFER_PASSWORD_FILE=%s\n' "$REPO" "$PW" | as_pg tee "$CONF" >/dev/null
if ! as_pg env -u COFFER_PASSWORD COFFER_PASSWORD_FILE="$PW" "$COFFER" --repo "$REPO" init $KDF \
    >"$TMP/init.out" 2>&1; then
    cat "$TMP/init.out" >&2
    echo "cannot create the repository" >&2
    exit 1
fi

# cfpg ARGS: coffer as the postgres user with the repository from the environment
cfpg() {
    as_pg env -u COFFER_PASSWORD COFFER_REPO="$REPO" COFFER_PASSWORD_FILE="$PW" "$COFFER" "$@"
}
# cfroot ARGS: coffer as root (restores: chown, runuser pg_ctl); then give new repository
# files (locks) back to the postgres user
CFROOT_ENV=()
cfroot() {
    local rc=0
    env "${CFROOT_ENV[@]}" COFFER_REPO="$REPO" "$COFFER" "$@" || rc=$?
    [[ $(id -u) -eq 0 ]] && chown -R postgres: "$REPO"
    return $rc
}
elapsed() { python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$(date +%s.%N)"; }
figure() { printf '# figure: %s\n' "$*"; }

if ! pg_init main "archive_mode = on" \
    "archive_command = '$COFFER wal-push --config $CONF %p'" || ! pg_start main; then
    pg_skip "cannot initdb or start a cluster"
fi
pg_sql main "create table t(id int primary key, ts timestamptz default clock_timestamp())" &&
    pg_sql main "insert into t(id) select g from generate_series(1,10) g" ||
    pg_skip "cannot run SQL on the test cluster"

# switch to a new WAL segment and wait until the server archived the old one
switch_and_wait() {
    local name=${1:-main} seg i
    seg=$(pg_sql "$name" "select pg_walfile_name(pg_current_wal_lsn())")
    pg_sql "$name" "select pg_switch_wal()" >/dev/null
    for i in $(seq 1 200); do
        [[ -f "$REPO/archive/pgwal/$seg" ]] && return 0
        sleep 0.05
    done
    note "segment $seg was never archived ($(pg_sql "$name" 'select failed_count, last_failed_wal from pg_stat_archiver'))"
    return 1
}

case_base_backup() {
    local t0
    t0=$(date +%s.%N)
    expect_exit 0 cfpg --json pg backup --pgdata "$PGROOT/main" || return 1
    figure "base backup: $(elapsed "$t0") s, $(json_get "$OUT" "j['bytes_total']") bytes of tar, $(json_get "$OUT" "j['bytes_added']") bytes added"
    BASE1=$(json_get "$OUT" "j['snapshot_id']")
    START_WAL=$(json_get "$OUT" "j['start_wal']")
    check "start_wal '$START_WAL' is not a segment name" test ${#START_WAL} = 24
    expect_exit 0 cfpg cat snapshot "$BASE1" || return 1
    check "snapshot has no postgres.stop_lsn" \
        test "$(json_get "$OUT" "j['postgres']['stop_lsn'] != '' and j['source']['kind']")" = postgres
    expect_exit 0 cfpg pg list || return 1
    output_has "${BASE1:0:8}.* 1 +0/" "pg list does not show the base backup"
}

case_workload() {
    pg_sql main "insert into t(id) select g from generate_series(11,100) g" || return 1
    T=$(pg_sql main "select clock_timestamp()")
    sleep 1
    pg_sql main "insert into t(id) select g from generate_series(101,200) g" || return 1
    check "primary does not have 200 rows" test "$(pg_sql main 'select count(*) from t')" = 200
}

case_second_base_backup() {
    local before after t0
    switch_and_wait || return 1
    before=$(repo_bytes "$REPO")
    t0=$(date +%s.%N)
    # as root this time: pg_basebackup and psql run as the data directory's owner
    expect_exit 0 cfroot --json pg backup --pgdata "$PGROOT/main" || return 1
    after=$(repo_bytes "$REPO")
    local added total
    added=$(json_get "$OUT" "j['bytes_added']")
    total=$(json_get "$OUT" "j['bytes_total']")
    figure "second base backup: $(elapsed "$t0") s, tar $total bytes, added $added bytes (repository grew $((after - before)) bytes incl. WAL)"
    BASE2=$(json_get "$OUT" "j['snapshot_id']")
    if ((added * 5 > total)); then
        note "the second base backup added $added of $total bytes: dedup does not work"
    fi
    # the rows after T must be in the archive before the primary stops
    pg_sql main "insert into t(id) values (1000)" && pg_sql main "delete from t where id = 1000" ||
        return 1
    switch_and_wait || return 1
    pg_stop main || note "cannot stop the primary"
}

count_rows() {
    pg_sql_port "$1" "select count(*) || ' ' || max(id) from t"
}

case_pitr_time() {
    local t0 port
    t0=$(date +%s.%N)
    # as root, with the password from a file: restore_command reads the same file
    CFROOT_ENV=(-u COFFER_PASSWORD COFFER_PASSWORD_FILE="$PW")
    expect_exit 0 cfroot --json pg restore --target "$PGROOT/r1" --time "$T" --start \
        --set port=${PG_NEXT_PORT} --set unix_socket_directories="$PGROOT/sock"
    local erc=$?
    CFROOT_ENV=()
    [[ $erc -eq 0 ]] || return 1
    figure "PITR to a time (extract + recovery + promote): $(elapsed "$t0") s (recovery $(json_get "$OUT" "round(j['recovery_seconds'], 2)") s)"
    check "restored the wrong base backup (want ${BASE1:0:8}: the one before T)" \
        test "$(json_get "$OUT" "j['snapshot_id']")" = "$BASE1"
    check "state is not promoted" test "$(json_get "$OUT" "j['state']")" = promoted
    port=$(pg_port_of "$PGROOT/r1")
    local got
    got=$(count_rows "$port")
    check "recovery to T restored '$got' rows, not exactly 100 (max id 100)" test "$got" = "100 100"
    check "env file is not 0600" test "$(stat -c %a "$PGROOT/r1.coffer.env")" = 600
    check "data directory is not owned by postgres with mode 0700" \
        test "$(stat -c %U:%a "$PGROOT/r1")" = postgres:700
    grep -q "COFFER_PASSWORD_FILE=" "$PGROOT/r1.coffer.env" ||
        note "env file does not reference the password file"
    pg_stop r1 || note "cannot stop r1"
    PG_NEXT_PORT=$((PG_NEXT_PORT + 1))
}

case_pitr_latest() {
    local t0 port got
    t0=$(date +%s.%N)
    # as root, with the password only in the environment: written into the 0600 env file
    expect_exit 0 cfroot --json pg restore --target "$PGROOT/r2" --latest --start \
        --set port=${PG_NEXT_PORT} --set unix_socket_directories="$PGROOT/sock" || return 1
    figure "PITR to the end of the archive: $(elapsed "$t0") s (recovery $(json_get "$OUT" "round(j['recovery_seconds'], 2)") s)"
    check "--latest restored the wrong base backup (want the newest ${BASE2:0:8})" \
        test "$(json_get "$OUT" "j['snapshot_id']")" = "$BASE2"
    port=$(pg_port_of "$PGROOT/r2")
    got=$(count_rows "$port")
    check "recovery to the end restored '$got' rows, not 200" test "$got" = "200 200"
    pg_stop r2 || note "cannot stop r2"
    PG_NEXT_PORT=$((PG_NEXT_PORT + 1))
}

case_standby_failover() {
    local i got
    # a standby fed from the archive; it keeps archive_command for when it becomes primary
    expect_exit 0 cfroot --json pg restore --target "$PGROOT/s1" --standby --archive-mode keep \
        --start --set port=${PG_NEXT_PORT} --set unix_socket_directories="$PGROOT/sock" || return 1
    check "state is not standby" test "$(json_get "$OUT" "j['state']")" = standby
    PG_PORT[s1]=$(pg_port_of "$PGROOT/s1")
    PG_NEXT_PORT=$((PG_NEXT_PORT + 1))
    for i in $(seq 1 100); do
        got=$(pg_sql s1 "select count(*) from t" 2>/dev/null)
        [[ "$got" == 200 ]] && break
        sleep 0.1
    done
    check "the standby replayed '$got' rows, not 200" test "$got" = 200
    check "the standby is not in recovery" test "$(pg_sql s1 'select pg_is_in_recovery()')" = t
    # failover: promote it; it starts timeline 2 and archives it into the repository
    as_pg "$PGBIN/pg_ctl" -D "$PGROOT/s1" -w -t 60 promote >/dev/null 2>&1 ||
        { note "pg_ctl promote failed"; return 1; }
    check "the promoted standby is still in recovery" \
        test "$(pg_sql s1 'select pg_is_in_recovery()')" = f
    pg_sql s1 "insert into t(id) select g from generate_series(201,250) g" || return 1
    switch_and_wait s1 || return 1
    check "timeline 2 has no history file in the archive" \
        test -f "$REPO/archive/pgwal/00000002.history"
    pg_stop s1 || note "cannot stop s1"
    expect_exit 0 cfpg --json pg check || return 1
    check "pg check does not follow timeline 2" test "$(json_get "$OUT" "j['timeline']")" = 2
    # recovery to the end now follows the history to timeline 2
    expect_exit 0 cfroot pg restore --target "$PGROOT/r4" --latest --start \
        --set port=${PG_NEXT_PORT} --set unix_socket_directories="$PGROOT/sock" || return 1
    PG_NEXT_PORT=$((PG_NEXT_PORT + 1))
    got=$(count_rows "$(pg_port_of "$PGROOT/r4")")
    check "recovery along timeline 2 restored '$got' rows, not 250" test "$got" = "250 250"
    pg_stop r4 || note "cannot stop r4"
}

case_restore_refusals() {
    expect_exit 1 cfroot pg restore --target "$PGROOT/r1" --latest || return 1
    output_has "not empty" "restoring into a non-empty directory: no clear message"
    expect_exit 1 cfroot pg restore --target "$PGROOT/r3" --time "2000-01-01 00:00:00+00" ||
        return 1
    output_has "no base backup precedes" "a time before every base backup: no clear message"
    expect_exit 2 cfroot pg restore --target "$PGROOT/r3" --lsn nonsense
}

case_check_and_gap() {
    expect_exit 0 cfpg pg check || return 1
    output_has "0 missing" "pg check does not report 0 missing"
    output_has "recoverable: from" "pg check does not report the recoverable window"
    # remove a segment between the oldest base backup and the newest segment
    local victim
    victim=$(ls "$REPO/archive/pgwal" | grep -E '^[0-9A-F]{24}$' | sort | awk -v s="$START_WAL" '$0 > s' | head -n 1)
    [[ -n "$victim" ]] || { note "no segment after $START_WAL to remove"; return 1; }
    mv "$REPO/archive/pgwal/$victim" "$TMP/saved-segment"
    expect_exit 12 cfpg pg check
    output_has "gap in the WAL archive: $victim" "pg check does not name the missing segment $victim"
    expect_exit 12 cfpg --json pg check
    check "pg check --json does not report 1 missing" test "$(json_get "$OUT" "j['missing']")" = 1
    mv "$TMP/saved-segment" "$REPO/archive/pgwal/$victim"
    expect_exit 0 cfpg pg check
}

case_wal_push_fetch() {
    local seg
    seg=$(ls "$REPO/archive/pgwal" | grep -E '^[0-9A-F]{24}$' | sort | tail -n 1)
    as_pg mkdir -p "$PGROOT/w/pg_wal"
    expect_exit 0 cfpg wal-fetch "$seg" "$PGROOT/w/pg_wal/$seg" || return 1
    check "fetched segment is not 16 MiB" test "$(stat -c %s "$PGROOT/w/pg_wal/$seg")" = 16777216
    # archive_command runs in the data directory with a relative %p
    local t0 i n=5
    t0=$(date +%s.%N)
    for i in $(seq 1 $n); do
        expect_exit 0 as_pg bash -c "cd '$PGROOT/w' && '$COFFER' wal-push --config '$CONF' 'pg_wal/$seg'" || return 1
    done
    figure "wal-push of a 16 MiB segment already archived: $(python3 -c "print('%.3f' % (($(date +%s.%N) - $t0) / $n))") s per push"
    # a new segment name: the full cost of a push (read, compress, seal, store)
    local fresh="0000000100000000000000F0"
    python3 - "$PGROOT/w/pg_wal/$seg" "$PGROOT/w/pg_wal/$fresh" <<'EOF'
import struct, sys
d = bytearray(open(sys.argv[1], 'rb').read())
ss = struct.unpack_from('<I', d, 32)[0]
struct.pack_into('<Q', d, 8, 0xF0 * ss)   # page address of segment 0xF0
open(sys.argv[2], 'wb').write(d)
EOF
    chown postgres: "$PGROOT/w/pg_wal/$fresh" 2>/dev/null
    t0=$(date +%s.%N)
    expect_exit 0 as_pg bash -c "cd '$PGROOT/w' && '$COFFER' wal-push --config '$CONF' 'pg_wal/$fresh'" || return 1
    figure "wal-push of a new 16 MiB segment: $(elapsed "$t0") s"
    # same name, different content: refused loudly
    printf 'x' | dd of="$PGROOT/w/pg_wal/$fresh" bs=1 seek=100000 conv=notrunc status=none
    expect_exit 1 as_pg bash -c "cd '$PGROOT/w' && '$COFFER' wal-push --config '$CONF' 'pg_wal/$fresh'"
    output_has "already exists with different content" "a conflicting push is not reported"
    # a file that is not the segment its name says
    cp "$PGROOT/w/pg_wal/$seg" "$PGROOT/w/pg_wal/0000000100000000000000F1"
    chown postgres: "$PGROOT/w/pg_wal/0000000100000000000000F1" 2>/dev/null
    expect_exit 2 as_pg bash -c "cd '$PGROOT/w' && '$COFFER' wal-push --config '$CONF' 'pg_wal/0000000100000000000000F1'"
    output_has "holds the data of another segment" "a misnamed segment is not refused"
    # missing: exit 1 and nothing written
    expect_exit 1 cfpg wal-fetch 0000000100000000000000FE "$PGROOT/w/missing"
    check "wal-fetch of a missing segment created its target" test ! -e "$PGROOT/w/missing"
    expect_exit 2 cfpg wal-fetch not-a-wal-name "$PGROOT/w/x"
    # damaged in the repository: a message, exit 12; 255 (abort recovery) with --abort-on-error
    cp "$REPO/archive/pgwal/$seg" "$TMP/saved-object"
    local size
    size=$(stat -c %s "$REPO/archive/pgwal/$seg")
    printf '\xff' | dd of="$REPO/archive/pgwal/$seg" bs=1 seek=$((size / 2)) conv=notrunc status=none
    expect_exit 12 cfpg wal-fetch "$seg" "$PGROOT/w/damaged"
    output_has "damaged|authentic" "a damaged segment gives no message"
    # (run, not expect_exit: an exit status above 128 would count as a crash there)
    run cfpg wal-fetch --abort-on-error "$seg" "$PGROOT/w/damaged"
    check "wal-fetch --abort-on-error of a damaged segment exited $RC, not 255" test "$RC" = 255
    if grep -aqE 'Sanitizer|runtime error:' "$ERR"; then note "sanitizer report from wal-fetch"; fi
    check "a damaged fetch left its target behind" test ! -e "$PGROOT/w/damaged"
    cp "$TMP/saved-object" "$REPO/archive/pgwal/$seg"
    expect_exit 0 cfpg wal-fetch "$seg" "$PGROOT/w/ok"
}

case_dump_roundtrip() {
    pg_start main || return 1
    pg_sql main "create database app" || return 1
    PGDB=app pg_sql main "create table items(id int primary key, name text); insert into items select g, 'item ' || g from generate_series(1, 500) g" ||
        return 1
    expect_exit 0 cfpg pg dump --pgdata "$PGROOT/main" --dbname app || return 1
    output_has "snapshot [0-9a-f]{8} saved" "pg dump printed no snapshot"
    expect_exit 0 cfpg snapshots || return 1
    output_has "/app.dump" "the dump snapshot is not listed"
    expect_exit 0 cfpg pg restore-dump latest --pgdata "$PGROOT/main" --dbname app_copy --create ||
        return 1
    local a b
    a=$(PGDB=app pg_sql main "select count(*), sum(id), md5(string_agg(name, ',' order by id)) from items")
    b=$(PGDB=app_copy pg_sql main "select count(*), sum(id), md5(string_agg(name, ',' order by id)) from items")
    check "restored dump differs: '$a' vs '$b'" test -n "$a" -a "$a" = "$b"
    # a failing pg_dump publishes nothing
    local n1 n2
    n1=$(snapshot_count)
    expect_exit 1 cfpg pg dump --pgdata "$PGROOT/main" --dbname no_such_db
    n2=$(snapshot_count)
    check "a failed pg_dump published a snapshot ($n1 -> $n2)" test "$n1" = "$n2"
}

snapshot_count() {
    cfpg snapshots --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'
}

case_backup_failures() {
    local n1 n2
    n1=$(snapshot_count)
    # a server that does not archive: a base backup of it could never be restored
    pg_start r1 || return 1
    expect_exit 2 cfpg pg backup --pgdata "$PGROOT/r1"
    output_has "archiving is off" "a server without archiving is not refused clearly"
    pg_stop r1
    # pg_basebackup failing half-way, and one whose tar stream stops short but exits 0
    local bin="$PGROOT/fakebin"
    as_pg mkdir -p "$bin"
    ln -sf "$(command -v psql)" "$bin/psql"
    printf '#!/bin/sh\nhead -c 300000 /dev/urandom\necho "pg_basebackup: error: simulated failure" >&2\nexit 1\n' >"$bin/pg_basebackup"
    chmod 755 "$bin/pg_basebackup"
    expect_exit 1 cfpg pg backup --pgdata "$PGROOT/main" --pg-bindir "$bin"
    output_has "simulated failure" "the failing pg_basebackup's message is not shown"
    printf '#!/bin/sh\nhead -c 700000 /dev/zero\nexit 0\n' >"$bin/pg_basebackup"
    expect_exit 1 cfpg pg backup --pgdata "$PGROOT/main" --pg-bindir "$bin"
    output_has "ended early" "a truncated tar stream is not detected"
    printf '#!/bin/sh\nhead -c 512 /dev/urandom\nhead -c 10240 /dev/zero\nexit 0\n' >"$bin/pg_basebackup"
    expect_exit 1 cfpg pg backup --pgdata "$PGROOT/main" --pg-bindir "$bin"
    output_has "checksum mismatch" "a damaged tar header is not detected"
    n2=$(snapshot_count)
    check "failed base backups published snapshots ($n1 -> $n2)" test "$n1" = "$n2"
}

case_no_sanitizer_reports() {
    if grep -aqE 'AddressSanitizer|UndefinedBehaviorSanitizer|LeakSanitizer|runtime error:' \
        "$PGROOT"/*.log 2>/dev/null; then
        note "sanitizer report in a server log (from wal-push or wal-fetch):"$'\n'"$(grep -ahE -A3 'Sanitizer|runtime error' "$PGROOT"/*.log | head -n 20)"
    fi
    if grep -aq "archive command failed" "$PGROOT/main.log"; then
        note "archive_command failed:"$'\n'"$(grep -a -A2 'archive command failed' "$PGROOT/main.log" | head -n 6)"
    fi
}

run_case "base backup through pg_basebackup into a snapshot" case_base_backup
run_case "rows 11..100, time T, rows 101..200" case_workload
run_case "a second base backup adds little" case_second_base_backup
run_case "pg restore --time T --start: exactly the 100 rows before T" case_pitr_time
run_case "pg restore --latest --start: all 200 rows" case_pitr_latest
run_case "standby from the archive, failover, recovery along timeline 2" case_standby_failover
run_case "pg restore refuses a non-empty target and an unreachable time" case_restore_refusals
run_case "pg check passes, then reports a removed segment (exit 12)" case_check_and_gap
run_case "wal-push/wal-fetch: idempotent, conflict, misnamed, missing, damaged" case_wal_push_fetch
run_case "pg dump / pg restore-dump round trip" case_dump_roundtrip
run_case "failed base backups publish nothing" case_backup_failures
run_case "no sanitizer reports and no failed archive_command in the server logs" case_no_sanitizer_reports
figure "test run: $(elapsed "$T_START") s"
finish
