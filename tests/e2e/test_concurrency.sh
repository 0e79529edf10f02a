#!/usr/bin/env bash
# test_concurrency.sh - several processes on one repository: two backups of trees sharing
# half their files run at the same time and both succeed, and the shared data ends up stored
# once (after prune at the latest; compared with backing up both trees one after the other);
# check and restore work while a backup runs; prune is refused (exit 13, naming the holder)
# while a backup holds its lock; and, for three seeds, two writers and a pruner racing leave
# a repository that checks clean and restores both trees exactly.
#
# Prints the measured sizes. Scaled down under ASan (COFFER_BIN with "asan").
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" || exit 1

FILE_MB=3
NSHARED=10      # files both trees hold
NUNIQUE=10      # files only one tree holds
BIG_FILES=30    # the long backup: 30 x 10 MB
BIG_MB=10
SEEDS="1 2 3"
if [[ "${COFFER_BIN:-}" == *asan* ]]; then
    FILE_MB=1
    BIG_FILES=15
    BIG_MB=8
fi

A="$TMP/a"
B="$TMP/b"
mkdir -p "$A/shared" "$B/common" "$A/own" "$B/own"
for i in $(seq -w 1 "$NSHARED"); do
    rand_file "$A/shared/s$i.bin" "$FILE_MB"
    cp -p "$A/shared/s$i.bin" "$B/common/s$i.bin"
done
for i in $(seq -w 1 "$NUNIQUE"); do
    rand_file "$A/own/a$i.bin" "$FILE_MB"
    rand_file "$B/own/b$i.bin" "$FILE_MB"
done
SHARED_BYTES=$((NSHARED * FILE_MB * 1048576))

data_bytes() {
    du -sb "$1/data" 2>/dev/null | cut -f1
}

nlocks() {
    ls "$1/locks" 2>/dev/null | wc -l
}

CONC="$TMP/conc"
SEQ="$TMP/seq"
SNAP_A=""
SNAP_B=""

# restore_cmp REPO SNAP TREE: restore and compare.
restore_cmp() {
    local t="$TMP/rst.$RANDOM"
    expect_exit 0 cf --repo "$1" restore "$2" --target "$t" || return 1
    assert_same_tree "$3" "$t$3"
    local rc=$?
    chmod -R u+rwX "$t"
    rm -rf "$t"
    return $rc
}

case_two_backups() {
    new_repo "$CONC"
    local pa pb ra=0 rb=0
    "$COFFER" --repo "$CONC" backup "$A" --json >"$TMP/a.out" 2>&1 &
    pa=$!
    "$COFFER" --repo "$CONC" backup "$B" --json >"$TMP/b.out" 2>&1 &
    pb=$!
    BG_PIDS+=("$pa" "$pb")
    wait "$pa" || ra=$?
    wait "$pb" || rb=$?
    [[ $ra == 0 ]] || note "backup of A exited $ra: $(tail -n 2 "$TMP/a.out")"
    [[ $rb == 0 ]] || note "backup of B exited $rb: $(tail -n 2 "$TMP/b.out")"
    [[ $ra == 0 && $rb == 0 ]] || return 1
    SNAP_A=$(json_get "$TMP/a.out" "j['snapshot_id']")
    SNAP_B=$(json_get "$TMP/b.out" "j['snapshot_id']")
    expect_exit 0 cf --repo "$CONC" check --read-data || return 1
    restore_cmp "$CONC" "$SNAP_A" "$A" || return 1
    restore_cmp "$CONC" "$SNAP_B" "$B"
}

case_shared_once() {
    new_repo "$SEQ"
    expect_exit 0 cf --repo "$SEQ" backup "$A" || return 1
    expect_exit 0 cf --repo "$SEQ" backup "$B" || return 1
    local conc seq
    conc=$(data_bytes "$CONC")
    seq=$(data_bytes "$SEQ")
    expect_exit 0 cf --repo "$CONC" prune || return 1
    local pruned
    pruned=$(data_bytes "$CONC")
    python3 -c "print('measured: concurrent backups %d bytes (%.3f x sequential %d; shared data %d); after prune %d (%.3f x)' % ($conc, $conc / $seq, $seq, $SHARED_BYTES, $pruned, $pruned / $seq))"
    # at worst both stored the shared files; once pruned, the duplicates are gone
    python3 -c "import sys; sys.exit(0 if $conc <= ($seq + $SHARED_BYTES) * 1.05 else 1)" ||
        note "concurrent backups stored $conc bytes, more than the union plus one copy of the shared data"
    python3 -c "import sys; sys.exit(0 if $pruned <= $seq * 1.10 else 1)" ||
        note "after prune the repository holds $pruned bytes, more than 110 % of the sequential $seq: the shared data is stored twice"
    expect_exit 0 cf --repo "$CONC" check --read-data || return 1
    restore_cmp "$CONC" "$SNAP_A" "$A" || return 1
    restore_cmp "$CONC" "$SNAP_B" "$B"
}

BIG="$TMP/big"
mkdir -p "$BIG"
for i in $(seq -w 1 "$BIG_FILES"); do
    rand_file "$BIG/g$i.bin" "$BIG_MB"
done

# start_long_backup REPO: a backup of the big tree in the background (one worker thread);
# waits until its lock is in locks/. Sets LONG_PID.
LONG_PID=""
start_long_backup() {
    local repo=$1 _k
    "$COFFER" --repo "$repo" backup "$BIG" --threads 1 >"$TMP/long.out" 2>&1 &
    LONG_PID=$!
    BG_PIDS+=("$LONG_PID")
    for _k in $(seq 1 1000); do
        [[ $(nlocks "$repo") -ge 1 ]] && return 0
        kill -0 "$LONG_PID" 2>/dev/null || break
        sleep 0.005
    done
    note "the long backup never showed a lock in locks/"
    return 1
}

# A backup that holds its lock as long as its stdin stays open.
start_slow_stdin_backup() {
    local repo=$1 _k
    { head -c 2000000 /dev/urandom; sleep "$2"; } |
        "$COFFER" --repo "$repo" backup --stdin --stdin-name slow.bin >"$TMP/slow.out" 2>&1 &
    LONG_PID=$!
    BG_PIDS+=("$LONG_PID")
    for _k in $(seq 1 1000); do
        [[ $(nlocks "$repo") -ge 1 ]] && return 0
        sleep 0.005
    done
    note "the slow backup never showed a lock in locks/"
    return 1
}

finish_long_backup() {
    local rc=0
    wait "$LONG_PID" || rc=$?
    [[ $rc == 0 ]] || note "the background backup exited $rc: $(tail -n 2 "$TMP/long.out" "$TMP/slow.out" 2>/dev/null)"
    return $rc
}

case_check_restore_during_backup() {
    start_long_backup "$CONC" || return 1
    expect_exit 0 cf --repo "$CONC" check --read-data
    kill -0 "$LONG_PID" 2>/dev/null || note "inconclusive: the backup had finished before check did"
    restore_cmp "$CONC" "$SNAP_A" "$A"
    kill -0 "$LONG_PID" 2>/dev/null || note "inconclusive: the backup had finished before restore did"
    expect_exit 0 cf --repo "$CONC" snapshots
    finish_long_backup || return 1
    expect_exit 0 cf --repo "$CONC" check
}

case_prune_refused() {
    # a repository of its own, so that the backup has all of the big tree to store
    local repo="$TMP/lockrepo"
    new_repo "$repo"
    start_long_backup "$repo" || return 1
    run cf --repo "$repo" prune
    local still=0
    kill -0 "$LONG_PID" 2>/dev/null && still=1
    if [[ $still == 1 ]]; then
        # the backup held its lock before the prune started and still runs after it ended
        if _crashed || [[ $RC != 13 ]]; then
            note "prune during a running backup exited $RC, expected 13"$'\n'"$(_tail_output)"
        else
            output_has "lock" "the refusal does not mention the lock"
            output_has "pid [0-9]+" "the refusal does not name the holder's pid"
        fi
    fi
    finish_long_backup || return 1
    local big_snap
    big_snap=$(grep -ao 'snapshot [0-9a-f]\{8\}' "$TMP/long.out" | tail -n 1 | cut -d' ' -f2)
    # always: a backup that holds its lock until its input ends
    start_slow_stdin_backup "$repo" 3 || return 1
    expect_exit 13 cf --repo "$repo" prune
    output_has "pid [0-9]+" "the refusal does not name the holder's pid"
    expect_exit 13 cf --repo "$repo" forget --keep-last 1 --prune
    kill -0 "$LONG_PID" 2>/dev/null || note "inconclusive: the slow backup ended before prune ran"
    finish_long_backup || return 1
    [[ $still == 1 ]] || echo "measured: the tree backup finished before prune could run; checked with the slow stdin backup only"
    # once the backups are done, prune runs and the repository is intact
    expect_exit 0 cf --repo "$repo" snapshots --json || return 1
    check "expected 2 snapshots (the refused forget must not have removed any)" test "$(json_get "$OUT" 'len(j)')" = 2
    expect_exit 0 cf --repo "$repo" prune || return 1
    expect_exit 0 cf --repo "$repo" check --read-data || return 1
    if [[ -n "$big_snap" ]]; then
        restore_cmp "$repo" "$big_snap" "$BIG"
    else
        note "no snapshot id in the long backup's output"
    fi
}

# Two writers and a pruner racing. Before they start, a snapshot of files both trees share is
# forgotten, so prune has garbage to delete that the writers deduplicate against.
case_race() {
    local seed=$1
    local repo="$TMP/race$seed" ta="$TMP/race$seed-a" tb="$TMP/race$seed-b" tg="$TMP/race$seed-g"
    python3 - "$seed" "$ta" "$tb" "$tg" "$FILE_MB" <<'EOF'
import os, random, sys
seed, ta, tb, tg, mb = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
r = random.Random(seed)
for d in (ta, tb, tg):
    os.makedirs(d)
for i in range(16):
    data = os.urandom(r.randint(512, mb * 1536) * 1024)
    # half the files in both trees; all of them in the forgotten one
    for d in ([ta, tb, tg] if i % 2 == 0 else [r.choice([ta, tb]), tg]):
        with open(os.path.join(d, 'x%02d.bin' % i), 'wb') as f:
            f.write(data)
EOF
    new_repo "$repo"
    expect_exit 0 cf --repo "$repo" backup "$tg" || return 1
    expect_exit 0 cf --repo "$repo" forget --keep-tag none-has-this || return 1
    local delay
    delay=$(python3 -c "import random; print('%.3f' % random.Random($seed * 31).uniform(0, 0.05))")
    local pa pb ra=0 rb=0
    "$COFFER" --repo "$repo" backup "$ta" --json >"$TMP/ra.out" 2>&1 &
    pa=$!
    "$COFFER" --repo "$repo" backup "$tb" --json >"$TMP/rb.out" 2>&1 &
    pb=$!
    BG_PIDS+=("$pa" "$pb")
    sleep "$delay"
    local refused=0 ran=0 other=0 prc
    while kill -0 "$pa" 2>/dev/null || kill -0 "$pb" 2>/dev/null; do
        prc=0
        "$COFFER" --repo "$repo" prune >"$TMP/rp.out" 2>&1 || prc=$?
        case $prc in
        0) ran=$((ran + 1)) ;;
        13) refused=$((refused + 1)) ;;
        *) other=$((other + 1)); note "prune exited $prc during the race: $(tail -n 2 "$TMP/rp.out")" ;;
        esac
    done
    wait "$pa" || ra=$?
    wait "$pb" || rb=$?
    # a writer that met the pruner's exclusive lock is refused (13) and simply runs again
    local again=0
    if [[ $ra == 13 ]]; then
        again=$((again + 1))
        expect_exit 0 cf --repo "$repo" backup "$ta" --json && cp "$OUT" "$TMP/ra.out" && ra=0
    fi
    if [[ $rb == 13 ]]; then
        again=$((again + 1))
        expect_exit 0 cf --repo "$repo" backup "$tb" --json && cp "$OUT" "$TMP/rb.out" && rb=0
    fi
    [[ $ra == 0 ]] || note "writer A exited $ra: $(tail -n 2 "$TMP/ra.out")"
    [[ $rb == 0 ]] || note "writer B exited $rb: $(tail -n 2 "$TMP/rb.out")"
    echo "measured: seed $seed: pruner started after ${delay}s; $refused prunes refused, $ran ran, $other failed; $again writers refused and rerun"
    [[ $ra == 0 && $rb == 0 ]] || return 1
    expect_exit 0 cf --repo "$repo" prune || return 1
    expect_exit 0 cf --repo "$repo" check --read-data || return 1
    restore_cmp "$repo" "$(json_get "$TMP/ra.out" "j['snapshot_id']")" "$ta" || return 1
    restore_cmp "$repo" "$(json_get "$TMP/rb.out" "j['snapshot_id']")" "$tb"
}

run_case "two backups at the same time both succeed" case_two_backups
run_case "shared data stored once" case_shared_once
run_case "check and restore during a backup" case_check_restore_during_backup
run_case "prune refused (exit 13) while a backup runs" case_prune_refused
for s in $SEEDS; do
    run_case "two writers and a pruner racing (seed $s)" case_race "$s"
done
finish
