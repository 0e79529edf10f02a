#!/usr/bin/env bash
# test_sqlite.sh - SQLite end to end: `coffer sqlite backup` of a live WAL database while a
# writer keeps inserting through one long-lived connection (the copy is consistent: integrity
# ok, a row count the database had); `replicate --once` shipping committed WAL frames across
# runs; `restore --time T` giving exactly the rows committed before T and restore of the
# latest giving all; continuous replication (commit-to-shipped delay measured) across WAL
# checkpoints; a damaged shipped object failing the restore with exit 12 and no target left.
# Skips (exit 77) without sqlite3 unless COFFER_REQUIRE_DATABASES contains "sqlite".
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

figure() { printf '# figure: %s\n' "$*"; }
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print('%.3f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$(now)"; }

sq_skip() { db_skip sqlite "$1"; }
if ! command -v sqlite3 >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -q -o DPkg::Lock::Timeout=120 </dev/null >/dev/null 2>&1
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            -o DPkg::Lock::Timeout=120 sqlite3 </dev/null >"$TMP/apt.log" 2>&1
    fi
    command -v sqlite3 >/dev/null 2>&1 || sq_skip "cannot install the sqlite3 shell"
fi

REPO="$TMP/repo"
new_repo "$REPO"
cfr() { "$COFFER" --repo "$REPO" "$@"; }
DB="$TMP/live.db"
q() { sqlite3 -cmd ".timeout 5000" "$1" "$2"; }

[[ $(q "$DB" "pragma journal_mode=wal") == wal ]] || sq_skip "cannot create a WAL database"
q "$DB" "create table t(id integer primary key, v text);
  with recursive c(x) as (select 1 union all select x+1 from c where x<20000)
  insert into t(v) select hex(randomblob(100)) from c;" || sq_skip "cannot write a database"

# The writer: ONE long-lived connection (so the -wal file stays), auto-checkpoint off, fed
# through a fifo held open on fd 7.
mkfifo "$TMP/w.fifo"
sqlite3 "$DB" <"$TMP/w.fifo" >"$TMP/writer.out" 2>&1 &
WRITER=$!
BG_PIDS+=("$WRITER")
exec 7>"$TMP/w.fifo"
echo ".timeout 5000" >&7
echo "pragma wal_autocheckpoint=0;" >&7
SENT=20000 # rows inserted so far (the writer applies them in order)
send_rows() { # N: one transaction per row
    local i
    for ((i = 0; i < $1; i++)); do echo "insert into t(v) values(hex(randomblob(100)));"; done >&7
    SENT=$((SENT + $1))
}
wait_rows() { # until the database shows every row sent
    local i
    for i in $(seq 1 200); do
        [[ $(q "$DB" "select count(*) from t") == "$SENT" ]] && return 0
        sleep 0.05
    done
    note "the writer did not apply $SENT rows (has $(q "$DB" "select count(*) from t"))"
    return 1
}
# consistent: integrity ok, ids 1..count (rows are only ever appended)
check_db() { # FILE WANT_COUNT_OR_EMPTY
    local ic n m
    ic=$(q "$1" "pragma integrity_check")
    n=$(q "$1" "select count(*) from t")
    m=$(q "$1" "select max(id) from t")
    check "integrity_check of $1: $ic" test "$ic" = ok || return 1
    check "$1 has $n rows but max id $m (not a state the database had)" test "$n" = "$m" || return 1
    if [[ -n "${2:-}" ]]; then
        check "$1 has $n rows, want $2" test "$n" = "$2" || return 1
    fi
    return 0
}

case_backup_live() {
    wait_rows || return 1
    local before after t
    # inserts keep arriving while the backup runs
    (for i in $(seq 1 150); do echo "insert into t(v) values('w$i');"; sleep 0.01; done >&7) &
    local feeder=$!
    sleep 0.3
    before=$(q "$DB" "select count(*) from t")
    t=$(now)
    expect_exit 0 cfr --json sqlite backup "$DB" --tag live
    local rc=$?
    figure "sqlite backup of a $(du -k "$DB" | cut -f1) KiB database (+WAL) under writes: $(elapsed "$t") s (copy $(json_get "$OUT" "'%.3f' % j['copy_seconds']") s)"
    after=$(q "$DB" "select count(*) from t")
    wait "$feeder"
    SENT=$((SENT + 150))
    [[ $rc -eq 0 ]] || return 1
    SNAP1=$(json_get "$OUT" "j['snapshot_id']")
    check "writer was not running during the backup ($before -> $after)" test "$before" -lt "$after"
    t=$(now)
    expect_exit 0 cfr sqlite restore --target "$TMP/copy1.db" --snapshot "$SNAP1" || return 1
    figure "restore of the copy: $(elapsed "$t") s"
    check_db "$TMP/copy1.db" || return 1
    local n
    n=$(q "$TMP/copy1.db" "select count(*) from t")
    check "the copy has $n rows, not between $before and $after" test "$n" -ge "$before" -a "$n" -le "$after"
    expect_exit 2 cfr sqlite backup
    expect_exit 1 cfr sqlite backup "$TMP/missing.db"
}

ONCE() { cfr --json sqlite replicate "$DB" --once; }

case_replicate_once() {
    wait_rows || return 1
    expect_exit 0 ONCE || return 1 # first run: a new generation (base copy)
    check "first replicate did not start a generation" test "$(json_get "$OUT" "j['new_generation']")" = True
    GEN=$(json_get "$OUT" "j['generation']")
    send_rows 40
    wait_rows || return 1
    expect_exit 0 ONCE || return 1
    check "second replicate started a new generation" test "$(json_get "$OUT" "j['new_generation']")" = False
    check "second replicate shipped $(json_get "$OUT" "j['commits']") commits, want 40" \
        test "$(json_get "$OUT" "j['commits']")" = 40
    sleep 0.3
    T=$(date -u '+%Y-%m-%dT%H:%M:%S.%NZ')
    N_AT_T=$(q "$DB" "select count(*) from t")
    sleep 0.3
    send_rows 60
    wait_rows || return 1
    expect_exit 0 ONCE || return 1
    check "third replicate shipped $(json_get "$OUT" "j['commits']") commits, want 60" \
        test "$(json_get "$OUT" "j['commits']")" = 60
    check "third replicate did not continue generation $GEN" test "$(json_get "$OUT" "j['generation']")" = "$GEN"
    local objs
    objs=$(find "$REPO/archive/sqlitewal" -type f | wc -l)
    check "expected 2 shipped objects, found $objs" test "$objs" = 2
}

case_restore_time() {
    local t
    t=$(now)
    expect_exit 0 cfr --json sqlite restore --target "$TMP/pitr.db" --time "$T" || return 1
    figure "restore --time (base + frames): $(elapsed "$t") s"
    check "restore to T applied $(json_get "$OUT" "j['commits']") commits, want 40" \
        test "$(json_get "$OUT" "j['commits']")" = 40
    check_db "$TMP/pitr.db" "$N_AT_T"
    t=$(now)
    expect_exit 0 cfr --json sqlite restore --target "$TMP/latest.db" || return 1
    figure "restore latest: $(elapsed "$t") s"
    check_db "$TMP/latest.db" "$SENT"
    check "latest differs from the live database" \
        test "$(q "$TMP/latest.db" "select sum(length(v)), group_concat(id) from t")" = \
        "$(q "$DB" "select sum(length(v)), group_concat(id) from t")"
    # a target that exists is refused; a time before every copy is not found
    expect_exit 1 cfr sqlite restore --target "$TMP/latest.db"
    expect_exit 1 cfr sqlite restore --target "$TMP/none.db" --time "2001-01-01T00:00:00Z"
    check "a refused restore left a file" test ! -e "$TMP/none.db"
}

case_continuous() {
    # ship continuously; measure commit -> durable in the repository
    "$COFFER" --repo "$REPO" sqlite replicate "$DB" --interval 0.25 >"$TMP/rep.out" 2>"$TMP/rep.err" &
    local rp=$! i t0 n0 n lags=""
    BG_PIDS+=("$rp")
    sleep 0.5
    for i in 1 2 3 4 5; do
        n0=$(find "$REPO/archive/sqlitewal" -type f | wc -l)
        send_rows 1
        wait_rows || break
        t0=$(now)
        for n in $(seq 1 200); do
            [[ $(find "$REPO/archive/sqlitewal" -type f | wc -l) -gt $n0 ]] && break
            sleep 0.01
        done
        lags+="$(elapsed "$t0") "
        sleep 0.2
    done
    # a burst large enough for the replicator's own checkpoint, then more writes: the writer
    # restarts the WAL, which the replicator follows as a new epoch of the same generation
    send_rows 3000
    wait_rows
    sleep 0.8
    send_rows 200
    wait_rows
    sleep 0.8
    kill -TERM "$rp"
    wait "$rp"
    local rc=$?
    figure "replicate --interval 0.25: commit visible -> shipped object durable (s): $lags"
    check "replicate exited $rc on SIGTERM" test "$rc" = 0
    check "replicate failed a step: $(grep -m1 warning "$TMP/rep.err")" test -z "$(grep warning "$TMP/rep.err")"
    check "the replicator never checkpointed the WAL" grep -q "WAL checkpointed" "$TMP/rep.err"
    check "no frames shipped from a restarted WAL" grep -q ": frames 1-" "$TMP/rep.err"
    check "a WAL restart started a new generation" test "$(grep -c "generation .*: base copy" "$TMP/rep.err")" = 0
    local t
    t=$(now)
    expect_exit 0 cfr --json sqlite restore --target "$TMP/cont.db" || return 1
    figure "restore latest after continuous shipping ($(json_get "$OUT" "j['objects']") objects, $(json_get "$OUT" "j['frames']") frames): $(elapsed "$t") s"
    check_db "$TMP/cont.db" "$SENT"
}

case_damaged_frames() {
    # on a copy of the repository: flip one byte in the last shipped object
    cp -a "$REPO" "$TMP/repo2"
    local obj
    obj=$(find "$TMP/repo2/archive/sqlitewal" -type f | sort | tail -n 1)
    python3 - "$obj" <<'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
b[len(b) // 2] ^= 0x40
open(p, 'wb').write(bytes(b))
EOF
    expect_exit 12 "$COFFER" --repo "$TMP/repo2" sqlite restore --target "$TMP/dmg/bad.db" || return 1
    output_has "damaged" "no message about the damaged object"
    check "a failed restore left the target" test ! -e "$TMP/dmg/bad.db"
    check "a failed restore left temporary files: $(ls "$TMP/dmg")" test -z "$(ls -A "$TMP/dmg")"
    # a shipped object missing in the middle of a generation is as loud (a missing last one
    # cannot be told from one not shipped yet)
    rm -f "$obj" "$(dirname "$obj")/0000000002"
    expect_exit 12 "$COFFER" --repo "$TMP/repo2" sqlite restore --target "$TMP/dmg/bad.db" || return 1
    output_has "missing" "no message about the missing object"
    check "a failed restore left the target" test ! -e "$TMP/dmg/bad.db"
}

mkdir -p "$TMP/dmg"
run_case "sqlite backup while a writer inserts: consistent copy" case_backup_live
run_case "replicate --once ships committed frames, continuing the generation" case_replicate_once
run_case "restore --time T gives exactly the rows before T; latest gives all" case_restore_time
run_case "continuous replicate: frames shipped within the interval, across checkpoints" case_continuous
run_case "damaged or missing shipped frames: exit 12, no target left" case_damaged_frames
exec 7>&-
finish
