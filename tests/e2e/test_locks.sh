#!/usr/bin/env bash
# test_locks.sh - repository locks: a backup killed with SIGKILL leaves a stale lock that does
# not block the next backup and that `coffer unlock` removes; the repository stays consistent
# after the kill; live locks are respected; concurrent backups share the repository. A
# repository on a read-only mount restores and checks without a lock (saying so) and refuses
# backup and prune.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPO="$TMP/repo"
SRC="$TMP/src"
new_repo "$REPO"
export COFFER_REPO="$REPO"

# a tree big enough for the backup to take a while: 24 files of 16 MiB
mkdir -p "$SRC/a" "$SRC/b"
for i in $(seq 1 12); do
    rand_file "$SRC/a/f$i.bin" 16
    rand_file "$SRC/b/g$i.bin" 16
done
printf 'small\n' >"$SRC/small.txt"

nlocks() {
    find "$REPO/locks" -type f 2>/dev/null | wc -l
}

npacks() {
    find "$REPO/data" -type f 2>/dev/null | wc -l
}

STALE_DIR="$TMP/stale"
STALE=""   # a copy of the killed backup's lock file, under its own name

case_kill() {
    "$COFFER" backup "$SRC" >"$TMP/killed.out" 2>&1 &
    local pid=$! i
    # wait until the backup holds its lock and has written some packs, then kill it
    for i in $(seq 1 400); do
        if [[ $(nlocks) -gt 0 && $(npacks) -ge 2 ]]; then
            break
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.02
    done
    if ! kill -9 "$pid" 2>/dev/null; then
        wait "$pid"
        note "the backup finished (exit $?) before it could be killed; make the tree bigger"
        return 1
    fi
    wait "$pid" 2>/dev/null
    check "no lock left in locks/ after kill -9 (found $(nlocks))" test "$(nlocks)" -ge 1 || return 1
    check "no snapshot should exist after the kill" test -z "$(ls -A "$REPO/snapshots" 2>/dev/null)"
    local lock
    lock=$(find "$REPO/locks" -type f | head -n 1)
    mkdir -p "$STALE_DIR"
    cp -a "$lock" "$STALE_DIR/"
    STALE="$STALE_DIR/$(basename "$lock")"
}

case_check_after_kill() {
    expect_exit 0 cf check --read-data
}

case_backup_not_blocked() {
    [[ -n "$STALE" && -f "$STALE" ]] || { note "no stale lock from the killed backup"; return 1; }
    # the stale lock is still there (or put back) when the backup starts
    [[ $(nlocks) -ge 1 ]] || cp -a "$STALE" "$REPO/locks/"
    expect_exit 0 cf backup "$SRC" || return 1
    local t="$TMP/r_after"
    expect_exit 0 cf restore latest --target "$t" || return 1
    assert_same_tree "$SRC" "$t$SRC"
    expect_exit 0 cf check --read-data
}

case_unlock() {
    [[ -n "$STALE" && -f "$STALE" ]] || { note "no stale lock from the killed backup"; return 1; }
    [[ -e "$REPO/locks/$(basename "$STALE")" ]] || cp -a "$STALE" "$REPO/locks/"
    expect_exit 0 cf unlock || return 1
    output_has 'removed 1 ' "unlock does not report removing one lock"
    check "unlock left $(nlocks) lock(s) in locks/" test "$(nlocks)" = 0
    expect_exit 0 cf unlock || return 1
    output_has 'removed 0 ' "a second unlock does not report removing nothing"
}

# A backup reading stdin from a pipe we hold open: its lock is live for as long as we want.
LIVE_FIFO="$TMP/live.fifo"
start_live_backup() {
    mkfifo "$LIVE_FIFO"
    "$COFFER" backup --stdin --stdin-name live.txt <"$LIVE_FIFO" >"$TMP/live.out" 2>&1 &
    LIVE_PID=$!
    BG_PIDS+=("$LIVE_PID")
    exec 7>"$LIVE_FIFO"
    printf 'live data\n' >&7
    local i
    for i in $(seq 1 250); do
        [[ $(nlocks) -ge 1 ]] && return 0
        sleep 0.02
    done
    return 1
}

finish_live_backup() {
    exec 7>&-
    wait "$LIVE_PID"
}

case_live_lock() {
    [[ $(nlocks) -eq 0 ]] || { note "locks/ is not empty before the case"; return 1; }
    if ! start_live_backup; then
        note "the stdin backup did not take a lock"
        finish_live_backup
        return 1
    fi
    # unlock must not remove the lock of a running process
    expect_exit 0 cf unlock
    output_has 'removed 0 ' "unlock removed the lock of a running backup"
    check "unlock removed the lock of a running backup" test "$(nlocks)" = 1
    # other shared users (a second backup, a restore, check) work alongside
    expect_exit 0 cf backup "$SRC/small.txt"
    expect_exit 0 cf restore latest --target "$TMP/r_live"
    check "restore next to a live lock restored wrong data" cmp "$SRC/small.txt" "$TMP/r_live$SRC/small.txt"
    expect_exit 0 cf check
    finish_live_backup
    local rc=$?
    check "the stdin backup exited $rc after its input closed" test "$rc" = 0
    check "the finished backup left its lock behind" test "$(nlocks)" = 0
    expect_exit 0 cf dump latest /live.txt ||
        { expect_exit 0 cf ls latest && note "stdin snapshot lists: $(tr '\n' ' ' <"$OUT")"; }
}

case_concurrent() {
    local other="$TMP/other"
    mkdir -p "$other"
    for i in 1 2 3 4; do rand_file "$other/o$i.bin" 16; done
    "$COFFER" backup "$SRC" >"$TMP/c1.out" 2>&1 &
    local p1=$!
    "$COFFER" backup --tag second "$other" >"$TMP/c2.out" 2>&1 &
    local p2=$!
    local r1=0 r2=0
    wait "$p1" || r1=$?
    wait "$p2" || r2=$?
    check "first concurrent backup exited $r1: $(tail -n 2 "$TMP/c1.out")" test "$r1" = 0
    check "second concurrent backup exited $r2: $(tail -n 2 "$TMP/c2.out")" test "$r2" = 0
    expect_exit 0 cf check --read-data
    local t="$TMP/r_conc"
    expect_exit 0 cf restore latest --target "$t" || return 1
    # latest is whichever finished last; restore both explicitly by tag/path
    expect_exit 0 cf snapshots --json --tag second || return 1
    local id
    id=$(json_get "$OUT" "j[0]['id']")
    expect_exit 0 cf restore "$id" --target "$TMP/r_conc2" || return 1
    assert_same_tree "$other" "$TMP/r_conc2$other"
    check "locks left after concurrent backups" test "$(nlocks)" = 0
}

case_garbage_lock() {
    printf 'garbage' >"$REPO/locks/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    run cf backup "$SRC/small.txt"
    _crashed && { note "backup crashed on a garbage lock file"; return 1; }
    if [[ $RC -ne 0 ]]; then
        # refusing is acceptable if the way out it points to works
        check "a lock conflict should exit 13, not $RC" test "$RC" = 13
        output_has 'unlock' "the lock error does not say how to get out"
        expect_exit 0 cf unlock
        expect_exit 0 cf backup "$SRC/small.txt" ||
            note "after following the hint ('coffer unlock'), the backup is still refused"
    fi
    rm -f "$REPO/locks/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    return 0
}

case_read_only_mount() {
    local ro="$TMP/ro"
    if ! mount_tmpfs "$ro" 64m; then
        skip "read-only repository" "mounting a tmpfs is not allowed here"
        return 0
    fi
    local r="$ro/repo"
    new_repo "$r"
    expect_exit 0 cf --repo "$r" backup "$SRC/small.txt" "$SRC/a/f1.bin" || return 1
    mount -o remount,ro "$ro" || { note "unable to remount $ro read-only"; return 1; }
    expect_exit 0 cf --repo "$r" restore latest --target "$TMP/ro-restore" || return 1
    output_has "reading without a lock" "a restore without a lock does not say so"
    check "restored file differs" cmp "$SRC/a/f1.bin" "$TMP/ro-restore$SRC/a/f1.bin"
    expect_exit 0 cf --repo "$r" check --read-data || return 1
    output_has "no problems found" "check of a read-only repository does not give its verdict"
    expect_exit 1 cf --repo "$r" backup "$SRC/small.txt" || return 1
    output_has "Read-only file system" "a backup to a read-only repository does not say why"
    expect_exit 1 cf --repo "$r" prune || return 1
    output_has "Read-only file system" "a prune of a read-only repository does not say why"
}

run_case "kill -9 during backup leaves a lock" case_kill
run_case "check --read-data passes after the kill" case_check_after_kill
run_case "stale lock does not block a new backup" case_backup_not_blocked
run_case "unlock removes the stale lock" case_unlock
run_case "live lock: unlock keeps it, shared users proceed" case_live_lock
run_case "concurrent backups into one repository" case_concurrent
run_case "garbage lock file" case_garbage_lock
run_case "read-only repository: restore and check without a lock, backup refused" case_read_only_mount
finish
