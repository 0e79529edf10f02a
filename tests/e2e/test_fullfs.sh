#!/usr/bin/env bash
# test_fullfs.sh - a repository on a full filesystem: on a 20 MB tmpfs, a 60 MB backup fails
# with exit 14 and a message about space, publishes no snapshot, leaves no lock, and leaves
# the repository consistent (check --read-data passes, earlier snapshots restore, the next
# small backup works). A prune that cannot write its index on a full disk keeps the old one.
#
# Needs root and a working `mount -t tmpfs`; otherwise prints "skipped: ..." and passes.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" || exit 1

MNT="$TMP/mnt"
MOUNTED=0

_fullfs_cleanup() {
    if [[ $MOUNTED == 1 ]]; then
        umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null
    fi
    _cleanup
}
trap _fullfs_cleanup EXIT

mkdir -p "$MNT"
if [[ $(id -u) -ne 0 ]]; then
    echo "skipped: not running as root (a tmpfs cannot be mounted)"
    finish
fi
if ! mount -t tmpfs -o size=20m,mode=0755 tmpfs "$MNT" 2>"$TMP/mount.err"; then
    echo "skipped: cannot mount a tmpfs: $(head -n 1 "$TMP/mount.err")"
    finish
fi
MOUNTED=1

REPO="$MNT/repo"
export COFFER_REPO="$REPO"
SMALL="$TMP/small"
BIG="$TMP/big"
BIG_MB=60
[[ "${COFFER_BIN:-}" == *asan* ]] && BIG_MB=40

mkdir -p "$SMALL/d" "$BIG"
printf 'first\n' >"$SMALL/a.txt"
head -c 100000 /dev/urandom >"$SMALL/d/b.bin"
for i in $(seq 1 $((BIG_MB / 5))); do
    rand_file "$BIG/f$i.bin" 5
done
new_repo "$REPO"

FIRST=""

nsnaps() {
    "$COFFER" snapshots --json 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'
}

case_small_backup() {
    expect_exit 0 cf backup "$SMALL" --json || return 1
    FIRST=$(json_get "$OUT" "j['snapshot_id']")
}

case_big_backup_fails() {
    expect_exit 14 cf backup "$BIG" || return 1
    output_has '[Nn]o space|space left|disk full|ENOSPC' "the error does not mention the lack of space"
    check "a snapshot was published by the failed backup (now $(nsnaps))" test "$(nsnaps)" = 1
    check "the failed backup left a lock behind" test -z "$(ls -A "$REPO/locks" 2>/dev/null)"
    echo "measured: after the failed backup the tmpfs holds $(du -sb "$REPO" | cut -f1) bytes"
}

case_consistent_after() {
    expect_exit 0 cf snapshots || return 1
    expect_exit 0 cf check --read-data || return 1
    local t="$TMP/restore1"
    expect_exit 0 cf restore "$FIRST" --target "$t" || return 1
    assert_same_tree "$SMALL" "$t$SMALL"
}

case_recovers() {
    # whatever the failed backup left is reclaimable, and small backups work again
    expect_exit 0 cf prune || return 1
    printf 'second\n' >"$SMALL/c.txt"
    expect_exit 0 cf backup "$SMALL" || return 1
    check "expected 2 snapshots" test "$(nsnaps)" = 2
    expect_exit 0 cf check --read-data || return 1
    local t="$TMP/restore2"
    expect_exit 0 cf restore latest --target "$t" || return 1
    assert_same_tree "$SMALL" "$t$SMALL"
}

# Fill the disk completely, then prune after a forget: prune has to write a new index and
# cannot. It must fail cleanly (exit 14) or succeed; either way nothing is lost.
case_prune_on_full_disk() {
    mkdir -p "$TMP/mid"
    head -c 3000000 /dev/urandom >"$TMP/mid/m.bin"
    expect_exit 0 cf backup "$TMP/mid" || return 1
    expect_exit 0 cf forget --keep-last 1 --group-by host || return 1
    dd if=/dev/zero of="$MNT/filler" bs=1M >/dev/null 2>&1
    dd if=/dev/zero of="$MNT/filler2" bs=4k >/dev/null 2>&1
    expect_exit '0|14' cf prune || return 1
    local prc=$RC
    rm -f "$MNT/filler" "$MNT/filler2"
    echo "measured: prune on a full disk exited $prc"
    check "prune left a lock behind" test -z "$(ls -A "$REPO/locks" 2>/dev/null)"
    expect_exit 0 cf check --read-data || return 1
    local t="$TMP/restore3"
    expect_exit 0 cf restore latest --target "$t" || return 1
    assert_same_tree "$TMP/mid" "$t$TMP/mid" || return 1
    expect_exit 0 cf prune || return 1
    expect_exit 0 cf check --read-data
}

run_case "small backup on the tmpfs" case_small_backup
run_case "60 MB backup on a 20 MB tmpfs fails with exit 14" case_big_backup_fails
run_case "repository consistent after the failure" case_consistent_after
run_case "prune and the next small backup work" case_recovers
run_case "prune on a full disk loses nothing" case_prune_on_full_disk
finish
