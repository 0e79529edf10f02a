#!/usr/bin/env bash
# test_pg_pitr.sh - point-in-time recovery of PostgreSQL to many targets, checked exactly:
# a seeded workload of inserts, updates and deletes over many transactions, with the commit
# time, LSN, transaction id and table checksum recorded after each commit; recovery with
# 'coffer pg restore' to times (one strictly between two commits a few milliseconds apart,
# one exactly on a commit with and without --exclusive), an LSN, transaction ids, a named
# restore point and the three target actions, each compared with the recorded checksum.
# Then WAL retention: 'coffer pg expire' removes exactly the segments before the oldest kept
# base backup, keeps timeline history files, and recovery from the kept backup still works.
# Skips (exit 77) without PostgreSQL unless COFFER_REQUIRE_DATABASES contains "postgres".
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/pg_lib.sh"

pg_require

REPO="$PGROOT/repo"
PW="$PGROOT/password"
CONF="$PGROOT/coffer.env"
T_START=$(date +%s.%N)

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

# coffer as the server's OS user (it owns the repository)
cfpg() {
    as_pg env -u COFFER_PASSWORD COFFER_REPO="$REPO" COFFER_PASSWORD_FILE="$PW" "$COFFER" "$@"
}
elapsed() { python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$(date +%s.%N)"; }
figure() { printf '# figure: %s\n' "$*"; }

if ! pg_init main "archive_mode = on" "track_commit_timestamp = on" \
    "archive_command = '$COFFER wal-push --config $CONF %p'" || ! pg_start main; then
    pg_skip "cannot initdb or start a cluster"
fi

# the checksum an operator compares: every row of t, in id order
SUM_SQL="select md5(coalesce(string_agg(t::text, ';' order by id), '')) from t"

# psql as postgres reading a script on stdin (unaligned, tuples only)
pg_script() {
    as_pg psql -X -q -v ON_ERROR_STOP=1 -h "$PGROOT/sock" -p "${PG_PORT[main]}" -U postgres \
        -d postgres -At -f -
}

switch_and_wait() {
    local seg i
    seg=$(pg_sql main "select pg_walfile_name(pg_current_wal_lsn())")
    pg_sql main "select pg_switch_wal()" >/dev/null
    for i in $(seq 1 200); do
        [[ -f "$REPO/archive/pgwal/$seg" ]] && return 0
        sleep 0.05
    done
    note "segment $seg was never archived ($(pg_sql main 'select failed_count, last_failed_wal from pg_stat_archiver'))"
    return 1
}

# ------------------------------------------------------------------ the workload

declare -A XID=() CTS=() TAFTER=() LSN=() SUM=() BEFORE=()
NEXT_ID=51
NTX=0
RANDOM=20251122 # seeded: the same statements every run

# dml: one to three random statements, in $DML (not a subshell: RANDOM and NEXT_ID advance)
dml() {
    local k s=""
    for k in $(seq 1 $((RANDOM % 3 + 1))); do
        case $((RANDOM % 3)) in
        0)
            local cnt=$((RANDOM % 20 + 1))
            s+="insert into t(id, v, n) select g, 'r' || g || '-$RANDOM', $RANDOM from generate_series($NEXT_ID, $((NEXT_ID + cnt - 1))) g; "
            NEXT_ID=$((NEXT_ID + cnt))
            ;;
        1) s+="update t set n = n + $((RANDOM % 100 + 1)), v = v || 'u' where id % 7 = $((RANDOM % 7)); " ;;
        2) s+="delete from t where id % 11 = $((RANDOM % 11)) and id < $((RANDOM % NEXT_ID + 1)); " ;;
        esac
    done
    DML=$s
}

# txn LABEL: one transaction; records its xid, commit timestamp, the time and WAL insert
# position just after the commit, and the table checksum before and after it
txn() {
    local label=$1 sql line
    NTX=$((NTX + 1))
    dml
    sql=$DML
    line=$(pg_script <<EOF
select ($SUM_SQL) as before \gset
begin;
$sql
select txid_current() as xid \gset
commit;
select :xid, pg_xact_commit_timestamp(:'xid'::xid), clock_timestamp(), pg_current_wal_insert_lsn(), ($SUM_SQL), :'before';
EOF
    ) || { note "transaction $label failed: $sql"; return 1; }
    IFS="|" read -r "XID[$label]" "CTS[$label]" "TAFTER[$label]" "LSN[$label]" "SUM[$label]" "BEFORE[$label]" <<<"$line"
    [[ -n "${SUM[$label]}" && -n "${XID[$label]}" ]] || { note "transaction $label recorded nothing: '$line'"; return 1; }
}

case_base_backup() {
    pg_sql main "create table t(id int primary key, v text, n int)" &&
        pg_sql main "insert into t select g, 'init-' || g, g from generate_series(1, 50) g" ||
        return 1
    switch_and_wait || return 1
    expect_exit 0 cfpg --json pg backup --pgdata "$PGROOT/main" --tag pgbase || return 1
    BASE1=$(json_get "$OUT" "j['snapshot_id']")
    B1_START=$(json_get "$OUT" "j['start_wal']")
    check "start_wal '$B1_START' is not a segment name" test ${#B1_START} = 24
}

case_workload() {
    local i t0
    t0=$(date +%s.%N)
    for i in $(seq 1 15); do
        txn "p1_$i" || return 1
        ((i % 5 == 0)) && { switch_and_wait || return 1; }
    done
    # a second base backup in the middle: targets before it must use the first one
    expect_exit 0 cfpg --json pg backup --pgdata "$PGROOT/main" --tag pgbase || return 1
    BASE2=$(json_get "$OUT" "j['snapshot_id']")
    B2_START=$(json_get "$OUT" "j['start_wal']")
    for i in $(seq 1 10); do
        txn "p2_$i" || return 1
        ((i % 4 == 0)) && { switch_and_wait || return 1; }
    done
    # two commits a few milliseconds apart, over one psql connection
    local line dml_a dml_b
    dml
    # each of the pair also inserts one row, so both change the table whatever the random
    # statements matched
    dml_a="$DML insert into t(id, v, n) values ($NEXT_ID, 'pair-a', 1);"
    NEXT_ID=$((NEXT_ID + 1))
    dml
    dml_b="$DML insert into t(id, v, n) values ($NEXT_ID, 'pair-b', 2);"
    NEXT_ID=$((NEXT_ID + 1))
    line=$(pg_script <<EOF
select ($SUM_SQL) as before_a \gset
begin;
$dml_a
select txid_current() as xa \gset
commit;
select pg_xact_commit_timestamp(:'xa'::xid) as ca, ($SUM_SQL) as sum_a \gset
select pg_sleep(0.004) as slept \gset
begin;
$dml_b
select txid_current() as xb \gset
commit;
select pg_xact_commit_timestamp(:'xb'::xid) as cb \gset
select :'before_a', :xa, :'ca', :'sum_a', :xb, :'cb', ($SUM_SQL),
       :'ca'::timestamptz + (:'cb'::timestamptz - :'ca'::timestamptz) / 2,
       round(extract(epoch from (:'cb'::timestamptz - :'ca'::timestamptz)) * 1000, 3);
EOF
    ) || { note "the close pair of commits failed"; return 1; }
    IFS='|' read -r BEFORE_A XA CA SUM_A XB CB SUM_B T_MID GAP_MS <<<"$line"
    figure "commits A and B are $GAP_MS ms apart; target $T_MID between them"
    check "commits A and B are not a few milliseconds apart ($GAP_MS ms)" \
        python3 -c "import sys; g = float(sys.argv[1]); sys.exit(0 if 0.002 < g < 200 else 1)" "$GAP_MS"
    check "commit A did not change the table" test "$SUM_A" != "$BEFORE_A"
    check "commit B did not change the table" test "$SUM_B" != "$SUM_A"
    for i in $(seq 1 5); do txn "p3_$i" || return 1; done
    switch_and_wait || return 1
    RP_SUM=$(pg_sql main "$SUM_SQL") || return 1
    pg_sql main "select pg_create_restore_point('coffer_rp')" >/dev/null || return 1
    for i in $(seq 1 5); do txn "p4_$i" || return 1; done
    END_SUM=$(pg_sql main "$SUM_SQL")
    # every transaction must have changed the table, or a checksum proves nothing
    local l same=0
    for l in "${!SUM[@]}"; do [[ "${SUM[$l]}" == "${BEFORE[$l]}" ]] && same=$((same + 1)); done
    ((same <= 3)) || note "$same transactions did not change the table"
    check "the restore point state equals the end state" test "$RP_SUM" != "$END_SUM"
    switch_and_wait || return 1
    figure "workload: $NTX transactions + 2 close commits in $(elapsed "$t0") s, $(pg_sql main 'select count(*) from t') rows"
    pg_stop main || note "cannot stop the primary"
}

# ------------------------------------------------------------------ restores

RN=0
# restore DESC WANT_SUM WANT_BASE ARGS...: pg restore --start to a new directory, then the
# checksum of the restored table must be WANT_SUM (the server reached the target and promoted)
restore_check() {
    local desc=$1 want=$2 want_base=$3 got port t0
    shift 3
    RN=$((RN + 1))
    LAST_DIR="$PGROOT/r$RN"
    t0=$(date +%s.%N)
    expect_exit 0 cfpg --json pg restore --target "$LAST_DIR" --start \
        --set port=$PG_NEXT_PORT --set unix_socket_directories="$PGROOT/sock" "$@" || return 1
    PG_NEXT_PORT=$((PG_NEXT_PORT + 1))
    local snap state
    snap=$(json_get "$OUT" "j['snapshot_id']")
    state=$(json_get "$OUT" "j.get('state', '')")
    figure "restore $desc: $(elapsed "$t0") s (base ${snap:0:8})"
    [[ -z "$want_base" || "$snap" == "$want_base" ]] ||
        note "$desc: restored base backup ${snap:0:8}, want ${want_base:0:8}"
    port=$(pg_port_of "$LAST_DIR")
    if [[ "$state" == promoted ]]; then
        check "$desc: the restored server is still in recovery" \
            test "$(pg_sql_port "$port" 'select pg_is_in_recovery()')" = f
    fi
    if [[ -n "$want" ]]; then
        got=$(pg_sql_port "$port" "$SUM_SQL")
        [[ "$got" == "$want" ]] || note "$desc: restored table checksum $got, want $want"
    fi
    if [[ "${KEEP_RUNNING:-0}" != 1 ]]; then
        as_pg "$PGBIN/pg_ctl" -D "$LAST_DIR" -m fast -w -t 60 stop >/dev/null 2>&1
    fi
    return 0
}

case_time_between_commits() {
    restore_check "--time between A and B" "$SUM_A" "$BASE2" --time "$T_MID" || return 1
    # exactly on A's commit time: inclusive (the default) keeps A, --exclusive drops it
    restore_check "--time = commit A" "$SUM_A" "$BASE2" --time "$CA"
    restore_check "--time = commit A --exclusive" "$BEFORE_A" "$BASE2" --time "$CA" --exclusive
}

case_time_before_second_backup() {
    # after p1_7 committed, before the second base backup: the first base backup is used
    restore_check "--time after p1_7" "${SUM[p1_7]}" "$BASE1" --time "${TAFTER[p1_7]}"
    restore_check "--time after p2_3" "${SUM[p2_3]}" "$BASE2" --time "${TAFTER[p2_3]}"
}

case_lsn() {
    restore_check "--lsn after p1_12" "${SUM[p1_12]}" "$BASE1" --lsn "${LSN[p1_12]}"
    restore_check "--lsn after p3_2" "${SUM[p3_2]}" "$BASE2" --lsn "${LSN[p3_2]}"
}

case_xid() {
    restore_check "--xid of p2_6" "${SUM[p2_6]}" "$BASE2" --xid "${XID[p2_6]}"
    restore_check "--xid of p1_4 --exclusive" "${BEFORE[p1_4]}" "$BASE1" --xid "${XID[p1_4]}" --exclusive
}

case_pause() {
    # paused at the target: read-only queries see the target state, replay waits
    KEEP_RUNNING=1 restore_check "--xid of p3_4 --target-action pause" "${SUM[p3_4]}" "$BASE2" \
        --xid "${XID[p3_4]}" --target-action pause || return 1
    local port
    port=$(pg_port_of "$LAST_DIR")
    check "pause: replay is not paused" test "$(pg_sql_port "$port" 'select pg_is_wal_replay_paused()')" = t
    check "pause: the server is not in recovery" test "$(pg_sql_port "$port" 'select pg_is_in_recovery()')" = t
    check "pause: the result does not say paused" test "$(json_get "$OUT" "j['state']")" = paused
    as_pg "$PGBIN/pg_ctl" -D "$LAST_DIR" -m fast -w -t 60 stop >/dev/null 2>&1
}

case_shutdown() {
    expect_exit 0 cfpg --json pg restore --target "$PGROOT/rs" --start --xid "${XID[p2_8]}" \
        --target-action shutdown --set port=$PG_NEXT_PORT \
        --set unix_socket_directories="$PGROOT/sock" || return 1
    check "shutdown: the result does not say shut down" test "$(json_get "$OUT" "j['state']")" = "shut down"
    check "shutdown: the server still runs" test ! -f "$PGROOT/rs/postmaster.pid"
    grep -aq "recovery stopping after commit of transaction ${XID[p2_8]}" "$PGROOT/rs/coffer-restore.log" ||
        note "shutdown: the server log does not say it stopped after transaction ${XID[p2_8]}"
    # the operator then decides: promote at the same target and check the data
    echo "recovery_target_action = 'promote'" | as_pg tee -a "$PGROOT/rs/postgresql.auto.conf" >/dev/null
    as_pg env -i PATH=/usr/bin:/bin "$PGBIN/pg_ctl" -D "$PGROOT/rs" -l "$PGROOT/rs.log" -w -t 60 start >/dev/null 2>&1 ||
        { note "shutdown: cannot start the server again"; return 1; }
    local port i got=""
    port=$(pg_port_of "$PGROOT/rs")
    PG_NEXT_PORT=$((PG_NEXT_PORT + 1))
    for i in $(seq 1 100); do
        [[ "$(pg_sql_port "$port" 'select pg_is_in_recovery()' 2>/dev/null)" == f ]] && break
        sleep 0.1
    done
    got=$(pg_sql_port "$port" "$SUM_SQL")
    check "shutdown then promote: checksum $got, want ${SUM[p2_8]}" test "$got" = "${SUM[p2_8]}"
    as_pg "$PGBIN/pg_ctl" -D "$PGROOT/rs" -m fast -w -t 60 stop >/dev/null 2>&1
}

case_name() {
    # the restore point; this copy becomes a primary that archives timeline 2
    KEEP_RUNNING=1 restore_check "--name coffer_rp" "$RP_SUM" "$BASE2" --name coffer_rp \
        --archive-mode keep || return 1
    local port
    port=$(pg_port_of "$LAST_DIR")
    TL2_DIR=$LAST_DIR
    pg_sql_port "$port" "insert into t select g, 'tl2', 0 from generate_series(100001, 100020) g" ||
        return 1
    TL2_SUM=$(pg_sql_port "$port" "$SUM_SQL")
    local seg i
    seg=$(pg_sql_port "$port" "select pg_walfile_name(pg_current_wal_lsn())")
    pg_sql_port "$port" "select pg_switch_wal()" >/dev/null
    for i in $(seq 1 200); do
        [[ -f "$REPO/archive/pgwal/$seg" ]] && break
        sleep 0.05
    done
    check "timeline 2 segment $seg was not archived" test -f "$REPO/archive/pgwal/$seg"
    check "timeline 2 has no history file in the archive" test -f "$REPO/archive/pgwal/00000002.history"
    as_pg "$PGBIN/pg_ctl" -D "$TL2_DIR" -m fast -w -t 60 stop >/dev/null 2>&1
}

case_bad_targets() {
    expect_exit 2 cfpg pg restore --target "$PGROOT/bad1" --xid 12abc
    expect_exit 2 cfpg pg restore --target "$PGROOT/bad2" --target-action explode --xid 1000
    expect_exit 2 cfpg pg restore --target "$PGROOT/bad3" --time "${TAFTER[p1_3]}" --lsn 0/1
    check "a refused restore created its target" test ! -e "$PGROOT/bad1" -a ! -e "$PGROOT/bad2"
}

# ------------------------------------------------------------------ WAL retention

# archived WAL files (names), sorted
archived() { ls "$REPO/archive/pgwal" | grep -E '^[0-9A-F]{8}(\.history|[0-9A-F]{16}(\.partial|\.[0-9A-F]{8}\.backup)?)$' | sort; }
# the archived files strictly before segment $1 (by segment number, any timeline), excluding
# history files
before_seg() {
    archived | awk -v s="${1:8:16}" '$0 !~ /\.history$/ && substr($0, 9, 16) < s'
}

case_expire() {
    local all0 want got
    all0=$(archived)
    # both base backups kept: only what precedes the first one may go
    want=$(before_seg "$B1_START")
    expect_exit 0 cfpg --json pg expire --dry-run || return 1
    got=$(json_get "$OUT" "'\n'.join(sorted(j['files']))")
    check "dry run with both backups kept: it would remove [$got], want [$want]" test "$got" = "$want"
    check "a dry run removed files" test "$(archived)" = "$all0"
    expect_exit 0 cfpg pg expire || return 1
    check "expire with both backups kept left: $(comm -3 <(archived) <(comm -23 <(echo "$all0") <(echo "$want")) | tr '\n' ' ')" \
        test "$(archived)" = "$(comm -23 <(echo "$all0") <(echo "$want"))"
    # forget the first base backup, then everything before the second one's start may go
    expect_exit 0 cfpg forget --tag pgbase --keep-last 1 || return 1
    expect_exit 0 cfpg --json pg list || return 1
    check "forget did not leave only the second base backup" \
        test "$(json_get "$OUT" "','.join(b['id'] for b in j)")" = "$BASE2"
    local all1
    all1=$(archived)
    want=$(before_seg "$B2_START")
    [[ -n "$want" ]] || note "nothing lies between the two base backups: the case proves nothing"
    check "the first base backup's history file is not among the files to go" \
        grep -q "^${B1_START}\.[0-9A-F]*\.backup$" <<<"$want"
    expect_exit 0 cfpg pg expire --dry-run || return 1
    output_has "would remove $(echo "$want" | grep -c .) WAL files" "dry run does not count $(echo "$want" | grep -c .) files"
    check "a dry run removed files" test "$(archived)" = "$all1"
    expect_exit 0 cfpg --json pg expire || return 1
    got=$(json_get "$OUT" "'\n'.join(sorted(j['files']))")
    check "expire removed [$got], want [$want]" test "$got" = "$want"
    local left
    left=$(comm -23 <(echo "$all1") <(echo "$want"))
    check "after expire the archive holds [$(archived | tr '\n' ' ')], want [$(echo "$left" | tr '\n' ' ')]" \
        test "$(archived)" = "$left"
    check "the oldest kept segment $B2_START is gone" test -f "$REPO/archive/pgwal/$B2_START"
    check "the timeline 2 history file was removed" test -f "$REPO/archive/pgwal/00000002.history"
    # a second run has nothing to do
    expect_exit 0 cfpg --json pg expire || return 1
    check "a second expire removed $(json_get "$OUT" "j['segments_removed']") segments" \
        test "$(json_get "$OUT" "len(j['files'])")" = 0
    # a cluster name without base backups: nothing can be judged unneeded
    expect_exit 1 cfpg pg expire --cluster nosuch
    output_has "no PostgreSQL base backup of cluster nosuch" "expire without base backups: no clear message"
}

case_after_expire() {
    expect_exit 0 cfpg --json pg check || return 1
    check "pg check after expire reports $(json_get "$OUT" "j['missing']") missing" \
        test "$(json_get "$OUT" "j['missing']")" = 0
    check "pg check after expire does not start at $B2_START" \
        test "$(json_get "$OUT" "j['first_wal']")" = "$B2_START"
    # recovery from the kept base backup: to a time on timeline 1, and to the end of timeline 2
    restore_check "after expire: --time after p3_5" "${SUM[p3_5]}" "$BASE2" --time "${TAFTER[p3_5]}"
    restore_check "after expire: --latest (timeline 2)" "$TL2_SUM" "$BASE2" --latest
    # the first base backup is gone: a time before the second one has no base backup
    expect_exit 1 cfpg pg restore --target "$PGROOT/rx" --time "${TAFTER[p1_3]}"
    output_has "no base backup precedes" "a time before the kept backup: no clear message"
}

case_no_sanitizer_reports() {
    if grep -aqE 'AddressSanitizer|UndefinedBehaviorSanitizer|LeakSanitizer|runtime error:' \
        "$PGROOT"/*.log "$PGROOT"/r*/coffer-restore.log 2>/dev/null; then
        note "sanitizer report in a server log (from wal-push or wal-fetch)"
    fi
    if grep -aq "archive command failed" "$PGROOT/main.log"; then
        note "archive_command failed:"$'\n'"$(grep -a -A2 'archive command failed' "$PGROOT/main.log" | head -n 6)"
    fi
}

run_case "base backup of a 50-row table" case_base_backup
run_case "seeded workload: commit times, LSNs, xids, checksums; second base backup" case_workload
run_case "--time strictly between two close commits; on a commit, inclusive and exclusive" case_time_between_commits
run_case "--time before and after the second base backup picks the right one" case_time_before_second_backup
run_case "--lsn just after a commit" case_lsn
run_case "--xid inclusive and --exclusive" case_xid
run_case "--target-action pause stops replay at the target" case_pause
run_case "--target-action shutdown stops at the target; promote then gives the same data" case_shutdown
run_case "--name restore point; the copy archives timeline 2" case_name
run_case "invalid targets are refused before anything is written" case_bad_targets
run_case "pg expire removes exactly the WAL before the oldest kept base backup" case_expire
run_case "after expire: pg check passes, recovery from the kept backup works" case_after_expire
run_case "no sanitizer reports and no failed archive_command" case_no_sanitizer_reports
figure "test run: $(elapsed "$T_START") s"
finish
