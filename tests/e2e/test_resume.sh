#!/usr/bin/env bash
# test_resume.sh - an interrupted backup is resumed, not redone: back up a ~300 MB tree of
# incompressible files, kill the backup with SIGKILL once the repository's data/ passes ~70 %
# of the tree's size, run the backup again and require that it stores less than 40 % of the
# data again (the killed run's checkpointed packs are reused). The final snapshot restores
# identically, check --read-data passes, and prune then removes everything no snapshot
# references (the killed run's unindexed packs and partial files). An interrupted restore
# (SIGTERM) exits 130 and leaves only complete files under real names; interrupted with
# --overwrite, every file it had not replaced yet is still the one that was there. A backup
# stopped with SIGTERM exits 130 leaving no snapshot, lock or temporary file, and the next
# backup reuses what it stored.
#
# Prints the measured figures. Scaled down under ASan (COFFER_BIN with "asan").
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" || exit 1

NFILES=30
FILE_MB=10
PACK="--pack-size 4194304"
if [[ "${COFFER_BIN:-}" == *asan* ]]; then
    FILE_MB=4
    PACK="--pack-size 1048576"
fi
TOTAL=$((NFILES * FILE_MB * 1048576))

SRC="$TMP/src"
REPO="$TMP/repo"
export COFFER_REPO="$REPO"

mkdir -p "$SRC"
for i in $(seq -w 1 "$NFILES"); do
    rand_file "$SRC/f$i.bin" "$FILE_MB"
done
new_repo "$REPO" $PACK

data_bytes() {
    du -sb "$REPO/data" 2>/dev/null | cut -f1
}

KILLED_AT=0

case_kill_at_70() {
    local limit=$((TOTAL * 70 / 100)) pid s=0
    "$COFFER" backup "$SRC" >"$TMP/killed.out" 2>&1 &
    pid=$!
    BG_PIDS+=("$pid")
    while kill -0 "$pid" 2>/dev/null; do
        s=$(data_bytes)
        if [[ -n "$s" && $s -ge $limit ]]; then
            kill -9 "$pid" 2>/dev/null
            break
        fi
        sleep 0.01
    done
    local rc=0
    wait "$pid" 2>/dev/null || rc=$?
    KILLED_AT=$s
    if [[ $rc -ne 137 ]]; then
        note "the backup was not killed mid-way (exit $rc at $s of $TOTAL bytes)"
        return 1
    fi
    echo "measured: killed at data/ = $s bytes ($((100 * s / TOTAL)) % of $TOTAL); $(ls "$REPO/index" | wc -l) index files, $(find "$REPO/data" -type f ! -name '.tmp-*' | wc -l) packs, $(find "$REPO" -name '.tmp-*' | wc -l) partial files"
    check "a killed backup published a snapshot" test -z "$(ls -A "$REPO/snapshots" 2>/dev/null)"
}

case_check_after_kill() {
    expect_exit 0 cf check --read-data
}

case_resume() {
    [[ $KILLED_AT -gt 0 ]] || { note "no interrupted backup to resume"; return 1; }
    expect_exit 0 cf backup "$SRC" --json || return 1
    local added
    added=$(json_get "$OUT" "j['bytes_added']")
    [[ "$added" =~ ^[0-9]+$ ]] || { note "no bytes_added in the summary: $added"; return 1; }
    python3 -c "print('measured: resumed backup stored %d of %d bytes again (%.1f %%)' % ($added, $TOTAL, 100.0 * $added / $TOTAL))"
    [[ $added -lt $((TOTAL * 40 / 100)) ]] ||
        note "the resumed backup stored $added bytes ($((100 * added / TOTAL)) % of the data), expected < 40 %"
}

case_restore() {
    local t="$TMP/restore"
    expect_exit 0 cf restore latest --target "$t" || return 1
    assert_same_tree "$SRC" "$t$SRC"
    chmod -R u+rwX "$t"
    rm -rf "$t"
}

case_prune() {
    local before after
    before=$(data_bytes)
    expect_exit 0 cf prune --json || return 1
    local deleted
    deleted=$(json_get "$OUT" "j['packs_deleted']")
    after=$(data_bytes)
    echo "measured: prune deleted $deleted packs, data/ $before -> $after bytes (tree $TOTAL)"
    expect_exit 0 cf check --read-data || return 1
    # nothing unreferenced is left: a second prune has nothing to free ...
    expect_exit 0 cf prune --dry-run --json || return 1
    check "a second prune would still free $(json_get "$OUT" "j['bytes_freed']") bytes" \
        test "$(json_get "$OUT" "j['bytes_freed']")" = 0
    # ... no partial file of the killed run remains ...
    local partial
    partial=$(find "$REPO" -name '.tmp-*' -printf '%P (%s bytes)\n')
    [[ -z "$partial" ]] || note "prune left the killed backup's partial files behind:"$'\n'"$partial"
    # ... and data/ holds the tree once (incompressible: the tree's size plus a little)
    python3 -c "import sys; sys.exit(0 if $after <= 1.03 * $TOTAL else 1)" ||
        note "data/ holds $after bytes after prune, more than 103 % of the $TOTAL bytes backed up"
    case_restore
}

case_backup_interrupted() {
    local repo="$TMP/repo-term" pid s=0 rc=0
    new_repo "$repo" $PACK
    "$COFFER" --repo "$repo" backup "$SRC" >"$TMP/term.out" 2>&1 &
    pid=$!
    BG_PIDS+=("$pid")
    while kill -0 "$pid" 2>/dev/null; do
        s=$(du -sb "$repo/data" 2>/dev/null | cut -f1)
        if [[ -n "$s" && $s -ge $((TOTAL * 30 / 100)) ]]; then
            kill -TERM "$pid" 2>/dev/null
            break
        fi
        sleep 0.01
    done
    wait "$pid" 2>/dev/null || rc=$?
    if [[ $rc -ne 130 ]]; then
        note "the backup was not interrupted mid-way (exit $rc): $(tail -n 2 "$TMP/term.out")"
        return 1
    fi
    check "the interruption is not reported" grep -q "backup interrupted" "$TMP/term.out"
    check "an interrupted backup published a snapshot" test -z "$(ls -A "$repo/snapshots" 2>/dev/null)"
    check "an interrupted backup left its lock" test -z "$(ls -A "$repo/locks" 2>/dev/null)"
    check "an interrupted backup left temporary files: $(find "$repo" -name '.tmp-*' | head -n 3)" \
        test -z "$(find "$repo" -name '.tmp-*')"
    expect_exit 0 cf --repo "$repo" backup "$SRC" --json || return 1
    local added
    added=$(json_get "$OUT" "j['bytes_added']")
    echo "measured: backup stopped at data/ = $s bytes; the next one stored $added of $TOTAL bytes"
    check "the next backup stored everything again ($added of $TOTAL bytes)" \
        test "$added" -lt $((TOTAL * 85 / 100))
    expect_exit 0 cf --repo "$repo" check --read-data
}

# Start a restore in the background, send SIGTERM once ready_fn succeeds, and wait: sets
# STOP_RC to its exit code. Args: output file, ready_fn, restore arguments...
STOP_RC=0
restore_stopped() {
    local out=$1 ready=$2 pid
    shift 2
    "$COFFER" restore latest "$@" >"$out" 2>&1 &
    pid=$!
    BG_PIDS+=("$pid")
    while kill -0 "$pid" 2>/dev/null; do
        if "$ready"; then
            kill -TERM "$pid" 2>/dev/null
            break
        fi
        sleep 0.005
    done
    STOP_RC=0
    wait "$pid" 2>/dev/null || STOP_RC=$?
}

# a quarter of the tree written into $TMP/rstop
quarter_written() {
    local s
    s=$(du -sb "$TMP/rstop" 2>/dev/null | cut -f1)
    [[ -n "$s" && $s -ge $((TOTAL / 4)) ]]
}

case_restore_interrupted() {
    local t="$TMP/rstop" f whole=0
    restore_stopped "$TMP/rstop.out" quarter_written --target "$t" --threads 1
    if [[ $STOP_RC -ne 130 ]]; then
        note "the restore was not interrupted mid-way (exit $STOP_RC): $(tail -n 2 "$TMP/rstop.out")"
        return 1
    fi
    check "the interruption is not reported" grep -q "interrupted" "$TMP/rstop.out"
    check "temporary files left behind: $(find "$t" -name '.coffer-restore-*' | head -n 3)" \
        test -z "$(find "$t" -name '.coffer-restore-*')"
    for f in "$t$SRC"/*; do
        [[ -e "$f" ]] || continue
        check "${f##*/} is under its name but not complete" cmp -s "$f" "$SRC/${f##*/}"
        whole=$((whole + 1))
    done
    echo "measured: interrupted restore left $whole complete files of $NFILES, none partial"
    # the same restore, run again with --overwrite, completes the tree
    expect_exit 0 cf restore latest --target "$t" --overwrite || return 1
    assert_same_tree "$SRC" "$t$SRC"
}

# the first file restore --overwrite replaced (its inode changed)
one_replaced() {
    local f
    for f in "$TMP/rover$SRC"/*; do
        [[ "$(stat -c %i "$f" 2>/dev/null)" == "${INODES[${f##*/}]}" ]] || return 0
    done
    return 1
}

declare -A INODES
case_overwrite_interrupted() {
    local t="$TMP/rover" f replaced=0 kept=0
    expect_exit 0 cf restore latest --target "$t" || return 1
    # local edits a restore --overwrite is asked to undo
    for f in "$t$SRC"/*; do
        printf 'local edit' >>"$f"
        cp "$f" "$TMP/edited-${f##*/}"
        INODES[${f##*/}]=$(stat -c %i "$f")
    done
    restore_stopped "$TMP/rover.out" one_replaced --target "$t" --overwrite --threads 1
    if [[ $STOP_RC -ne 130 ]]; then
        note "the restore was not interrupted mid-way (exit $STOP_RC): $(tail -n 2 "$TMP/rover.out")"
        return 1
    fi
    for f in "$t$SRC"/*; do
        if cmp -s "$f" "$SRC/${f##*/}"; then
            replaced=$((replaced + 1))
        elif cmp -s "$f" "$TMP/edited-${f##*/}"; then
            kept=$((kept + 1))
        else
            note "${f##*/} is neither the snapshot's version nor the one it replaced"
        fi
    done
    echo "measured: interrupted restore --overwrite: $replaced files replaced, $kept untouched"
    check "not every file is there ($((replaced + kept)) of $NFILES)" test $((replaced + kept)) = "$NFILES"
    check "no file was left as it was" test "$kept" -gt 0
    check "temporary files left behind" test -z "$(find "$t" -name '.coffer-restore-*')"
}

run_case "backup killed at ~70 % of the data" case_kill_at_70
run_case "check --read-data after the kill" case_check_after_kill
run_case "resumed backup stores < 40 % again" case_resume
run_case "final snapshot restores identically" case_restore
run_case "restore interrupted by SIGTERM: exit 130, only complete files" case_restore_interrupted
run_case "restore --overwrite interrupted: files not yet replaced are intact" case_overwrite_interrupted
run_case "prune removes what no snapshot references" case_prune
run_case "backup interrupted by SIGTERM: exit 130, nothing half-done, reused next time" case_backup_interrupted
finish
