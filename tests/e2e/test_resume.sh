#!/usr/bin/env bash
# test_resume.sh - an interrupted backup is resumed, not redone: back up a ~300 MB tree of
# incompressible files, kill the backup with SIGKILL once the repository's data/ passes ~70 %
# of the tree's size, run the backup again and require that it stores less than 40 % of the
# data again (the killed run's checkpointed packs are reused). The final snapshot restores
# identically, check --read-data passes, and prune then removes everything no snapshot
# references (the killed run's unindexed packs and partial files).
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

run_case "backup killed at ~70 % of the data" case_kill_at_70
run_case "check --read-data after the kill" case_check_after_kill
run_case "resumed backup stores < 40 % again" case_resume
run_case "final snapshot restores identically" case_restore
run_case "prune removes what no snapshot references" case_prune
finish
