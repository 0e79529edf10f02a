#!/usr/bin/env bash
# Prune and storage retention: packs the storage refuses to delete (S3 Object Lock, or here an
# immutable file) are kept and reported, prune finishes, nothing is lost, and a later prune
# removes them once allowed.
source "$(dirname "$0")/lib.sh" || exit 1

REPO="$TMP/repo"
SRC="$TMP/src"
mkdir -p "$SRC"
export COFFER_PASSWORD=pw

case_locked_packs() {
    if [[ $(id -u) -ne 0 ]] || ! command -v chattr >/dev/null; then
        SKIPPED="needs root and chattr to make files immutable"
        return 0
    fi
    expect_exit 0 "$COFFER" --repo "$REPO" init --kdf-log-n 10 --pack-size 1048576 || return 1
    head -c 3000000 /dev/urandom > "$SRC/old"
    expect_exit 0 "$COFFER" --repo "$REPO" backup "$SRC" -q || return 1
    rm "$SRC/old"
    head -c 2000000 /dev/urandom > "$SRC/new"
    expect_exit 0 "$COFFER" --repo "$REPO" backup "$SRC" -q || return 1
    expect_exit 0 "$COFFER" --repo "$REPO" forget --keep-last 1 || return 1
    local f
    find "$REPO/data" -type f ! -name '.tmp*' > "$TMP/packs"
    if ! chattr +i $(cat "$TMP/packs") 2>/dev/null; then
        SKIPPED="this filesystem does not support immutable files"
        return 0
    fi
    trap 'chattr -i $(cat "$TMP/packs") 2>/dev/null' RETURN
    expect_exit 0 "$COFFER" --repo "$REPO" prune --json || return 1
    local locked
    locked=$(json_get "$OUT" "j['packs_locked']")
    check "no pack was reported as kept under retention ($locked)" test "$locked" -ge 1
    expect_exit 0 "$COFFER" --repo "$REPO" check --read-data || return 1
    expect_exit 0 "$COFFER" --repo "$REPO" restore latest --target "$TMP/out" -q || return 1
    check "restore after a prune with locked packs differs" diff -r "$SRC" "$TMP/out$SRC"
    chattr -i $(cat "$TMP/packs")
    local before after
    before=$(du -sb "$REPO/data" | cut -f1)
    expect_exit 0 "$COFFER" --repo "$REPO" prune || return 1
    after=$(du -sb "$REPO/data" | cut -f1)
    check "the packs kept under retention were not removed later ($before -> $after)" test "$after" -lt "$before"
    expect_exit 0 "$COFFER" --repo "$REPO" check --read-data
}

run_case "packs under retention are kept, reported and removed later" case_locked_packs
finish
