#!/usr/bin/env bash
# test_pg_archive_failure.sh - what happens to WAL archiving when the repository cannot take
# it: the repository directory unwritable, renamed away, and (as root) on a full file system.
# 'coffer wal-push' must fail and store nothing; PostgreSQL keeps the segment (.ready in
# pg_wal/archive_status, pg_stat_archiver.failed_count grows); once the repository is back
# the archiver catches up, 'coffer pg check' finds no gap and recovery to the end of the
# archive has every committed row.
# Skips (exit 77) without PostgreSQL unless COFFER_REQUIRE_DATABASES contains "postgres".
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/pg_lib.sh"

pg_require

MNT="$PGROOT/fs"
REPO="$MNT/repo"
PW="$PGROOT/password"
CONF="$PGROOT/coffer.env"
T_START=$(date +%s.%N)

# as root, the repository lives on a small tmpfs of its own, so that it can be filled up
FULL_OK=0
if mount_tmpfs "$MNT" 160m; then
    FULL_OK=1
    chown postgres: "$MNT"
else
    as_pg mkdir "$MNT"
fi
as_pg mkdir "$REPO" "$PGROOT/w"
printf '%s\n' "$COFFER_PASSWORD" | as_pg tee "$PW" >/dev/null
as_pg chmod 600 "$PW"
printf 'COFFER_REPO=%s\nCOFFER_PASSWORD_FILE=%s\n' "$REPO" "$PW" | as_pg tee "$CONF" >/dev/null
if ! as_pg env -u COFFER_PASSWORD COFFER_PASSWORD_FILE="$PW" "$COFFER" --repo "$REPO" init $KDF \
    >"$TMP/init.out" 2>&1; then
    cat "$TMP/init.out" >&2
    echo "cannot create the repository" >&2
    exit 1
fi

cfpg() {
    as_pg env -u COFFER_PASSWORD COFFER_REPO="$REPO" COFFER_PASSWORD_FILE="$PW" "$COFFER" "$@"
}
elapsed() { python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$(date +%s.%N)"; }
figure() { printf '# figure: %s\n' "$*"; }

if ! pg_init main "archive_mode = on" \
    "archive_command = '$COFFER wal-push --config $CONF %p'" || ! pg_start main; then
    pg_skip "cannot initdb or start a cluster"
fi
PGD="$PGROOT/main"
SUM_SQL="select count(*) || ' ' || md5(coalesce(string_agg(t::text, ';' order by id), '')) from t"
NEXT=1

# rows N: insert N rows in their own transaction
rows() {
    pg_sql main "insert into t select g, 'row ' || g from generate_series($NEXT, $((NEXT + $1 - 1))) g" ||
        return 1
    NEXT=$((NEXT + $1))
}

failed_count() { pg_sql main "select failed_count from pg_stat_archiver"; }

switch_and_wait() {
    local seg i
    seg=$(pg_sql main "select pg_walfile_name(pg_current_wal_lsn())")
    pg_sql main "select pg_switch_wal()" >/dev/null
    for i in $(seq 1 300); do
        [[ -f "$REPO/archive/pgwal/$seg" ]] && return 0
        sleep 0.05
    done
    note "segment $seg was never archived ($(pg_sql main 'select failed_count, last_failed_wal from pg_stat_archiver'))"
    return 1
}

# fail_segment DESC: write rows, switch WAL, and require the archiver to fail on that segment
# while PostgreSQL keeps it. Sets SEG.
fail_segment() {
    local desc=$1 before i
    before=$(failed_count)
    rows 50 || return 1
    SEG=$(pg_sql main "select pg_walfile_name(pg_current_wal_lsn())")
    pg_sql main "select pg_switch_wal()" >/dev/null
    for i in $(seq 1 200); do
        (($(failed_count) > before)) && break
        sleep 0.05
    done
    check "$desc: pg_stat_archiver.failed_count did not grow (still $before)" \
        test "$(failed_count)" -gt "$before"
    check "$desc: PostgreSQL did not keep $SEG as .ready" test -f "$PGD/pg_wal/archive_status/$SEG.ready"
    check "$desc: $SEG is no longer in pg_wal" test -f "$PGD/pg_wal/$SEG"
    check "$desc: $SEG was archived although the repository cannot take it" \
        test ! -e "$REPO/archive/pgwal/$SEG"
    # keep a copy to compare with what is archived later
    cp "$PGD/pg_wal/$SEG" "$TMP/$SEG"
    # the same push by hand: non-zero, nothing stored
    expect_exit "$2" as_pg bash -c "cd '$PGD' && '$COFFER' wal-push --config '$CONF' 'pg_wal/$SEG'"
    check "$desc: a failed wal-push left $SEG in the repository" test ! -e "$REPO/archive/pgwal/$SEG"
    FAILED_SEGS+=("$SEG")
}

FAILED_SEGS=()

case_setup() {
    pg_sql main "create table t(id int primary key, v text)" || return 1
    rows 100 || return 1
    expect_exit 0 cfpg pg backup --pgdata "$PGD" || return 1
    rows 50 || return 1
    switch_and_wait
}

case_unwritable() {
    # the repository's WAL directory is read-only for the server's OS user
    chmod 0500 "$REPO/archive/pgwal"
    fail_segment "unwritable" 1 || return 1
    output_has "Permission denied|permission denied" "wal-push does not say permission denied"
    check "a failed push left temporary files" test -z "$(ls -A "$REPO/archive/pgwal" | grep -v -E '^[0-9A-F]{8}')"
    grep -aq "archive command failed" "$PGROOT/main.log" ||
        note "the server log does not report the failing archive command"
    grep -aq "coffer: error" "$PGROOT/main.log" ||
        note "coffer's message is not in the server log"
}

case_renamed() {
    # the repository is gone (unmounted, renamed): nothing may be created in its place
    chmod 0700 "$REPO/archive/pgwal"
    mv "$REPO" "$REPO.away"
    fail_segment "missing repository" 10 || { mv "$REPO.away" "$REPO"; return 1; }
    check "a push to a missing repository created it" test ! -e "$REPO"
    mv "$REPO.away" "$REPO"
    output_has "repository" "wal-push to a missing repository does not name the repository"
}

case_full() {
    if ((!FULL_OK)); then
        SKIPPED="not root: cannot mount a small file system to fill"
        return 0
    fi
    # fill the file system, leaving less than a compressed segment
    dd if=/dev/urandom of="$MNT/filler" bs=1M count=400 status=none 2>/dev/null
    fail_segment "full file system" 14 || { rm -f "$MNT/filler"; return 1; }
    output_has "space" "wal-push on a full file system does not say so"
    check "a failed push on a full file system left temporary files" \
        test -z "$(ls -A "$REPO/archive/pgwal" | grep -v -E '^[0-9A-F]{8}')"
    rm -f "$MNT/filler"
}

case_catch_up() {
    local t0 i n
    t0=$(date +%s.%N)
    # the repository is back; the next switch wakes the archiver
    rows 50 || return 1
    switch_and_wait || return 1
    for i in $(seq 1 300); do
        n=$(ls "$PGD/pg_wal/archive_status" | grep -c '\.ready$')
        [[ $n == 0 ]] && break
        sleep 0.1
    done
    figure "archiver caught up in $(elapsed "$t0") s"
    check "PostgreSQL still has $n segments waiting (.ready)" test "$n" = 0
    local s
    for s in "${FAILED_SEGS[@]}"; do
        check "$s was never archived after the repository came back" test -f "$REPO/archive/pgwal/$s"
        # what is archived is what PostgreSQL wrote
        expect_exit 0 cfpg wal-fetch "$s" "$PGROOT/w/$s" || continue
        check "archived $s differs from the segment PostgreSQL kept" cmp -s "$TMP/$s" "$PGROOT/w/$s"
        # and a push of it by hand now succeeds (idempotent)
        chown postgres: "$TMP/$s" 2>/dev/null
        expect_exit 0 cfpg wal-push "$TMP/$s"
    done
    check "pg_stat_archiver: last_archived_wal is empty" \
        test -n "$(pg_sql main 'select last_archived_wal from pg_stat_archiver')"
}

case_check_and_recover() {
    expect_exit 0 cfpg --json pg check || return 1
    check "pg check reports $(json_get "$OUT" "j['missing']") missing segments" \
        test "$(json_get "$OUT" "j['missing']")" = 0
    # every committed row, by checksum
    local want got port
    rows 7 || return 1
    switch_and_wait || return 1
    want=$(pg_sql main "$SUM_SQL")
    expect_exit 0 env COFFER_REPO="$REPO" "$COFFER" --json pg restore --target "$PGROOT/r1" \
        --latest --start --set port=$PG_NEXT_PORT --set unix_socket_directories="$PGROOT/sock" ||
        return 1
    [[ $(id -u) -eq 0 ]] && chown -R postgres: "$REPO"
    port=$(pg_port_of "$PGROOT/r1")
    got=$(pg_sql_port "$port" "$SUM_SQL")
    check "recovery to the end: '$got', want '$want' ($((NEXT - 1)) rows)" test "$got" = "$want"
    pg_stop r1
}

run_case "base backup, rows, archiving works" case_setup
run_case "unwritable repository: wal-push fails, PostgreSQL keeps the segment" case_unwritable
run_case "missing repository: wal-push fails (exit 10), PostgreSQL keeps the segment" case_renamed
run_case "full file system: wal-push fails (exit 14), PostgreSQL keeps the segment" case_full
run_case "repository back: the archiver catches up with the same bytes" case_catch_up
run_case "pg check finds no gap; recovery to the end has every row" case_check_and_recover
figure "test run: $(elapsed "$T_START") s"
finish
