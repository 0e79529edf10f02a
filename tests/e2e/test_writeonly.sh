#!/usr/bin/env bash
# Write-only keys: a backup host that can add snapshots and deduplicate against everything
# stored, but cannot read any file content, name or snapshot, not even its own.
source "$(dirname "$0")/lib.sh" || exit 1

SRC="$TMP/src"
REPO="$TMP/repo"
mkdir -p "$SRC/a" "$SRC/b"
SECRET="SECRET-MARKER-$$-$RANDOM$RANDOM"
printf '%s\n' "$SECRET" > "$SRC/a/secret.txt"
head -c 4000000 /dev/urandom > "$SRC/a/big"
cp "$SRC/a/big" "$SRC/b/copy-of-big"
printf 'new data only the write-only host has\n' > "$SRC/b/new.txt"

admin() { COFFER_PASSWORD=admin-pw "$COFFER" --repo "$REPO" "$@"; }
wonly() { COFFER_PASSWORD=wo-pw "$COFFER" --repo "$REPO" "$@"; }

case_setup() {
    expect_exit 0 env COFFER_PASSWORD=admin-pw "$COFFER" --repo "$REPO" init --kdf-log-n 10 || return 1
    expect_exit 0 admin backup "$SRC/a" -q || return 1
    expect_exit 0 env COFFER_PASSWORD=admin-pw COFFER_NEW_PASSWORD=wo-pw "$COFFER" --repo "$REPO" \
        key add --write-only --kdf-log-n 10 || return 1
    admin key list --json | python3 -c 'import json,sys; k=json.load(sys.stdin); assert any(x["role"]=="write-only" for x in k), k'
}

case_backup_dedups() {
    local before after added
    before=$(du -sb "$REPO/data" | cut -f1)
    expect_exit 0 wonly backup "$SRC/a" "$SRC/b" --json || return 1
    added=$(tail -n 1 "$OUT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_added"])')
    after=$(du -sb "$REPO/data" | cut -f1)
    echo "# measured: write-only backup of 8 MB (4 MB already stored by another host, 4 MB a copy of it) added $added bytes; data/ grew by $((after - before)) bytes"
    check "the write-only backup re-stored data that was there ($added bytes added)" test "$added" -lt 200000
}

case_cannot_read() {
    expect_exit 1 wonly snapshots || return 1
    output_has "write-only" "listing snapshots with a write-only key does not say why it fails"
    expect_exit 1 wonly restore latest --target "$TMP/out" || return 1
    check "a refused restore created files" test ! -e "$TMP/out/tmp"
    expect_exit 1 wonly ls latest || return 1
    expect_exit 1 wonly dump latest "$SRC/a/secret.txt" || return 1
    local pack
    pack=$(find "$REPO/data" -type f ! -name '.tmp*' | head -n 1 | xargs basename)
    expect_exit 1 wonly cat pack "$pack" || return 1
    output_has "admin key" "reading a pack with a write-only key does not say why it fails"
}

case_cannot_destroy() {
    expect_exit 1 wonly forget --keep-last 1 --prune || true
    expect_exit 1 wonly prune || return 1
    local id
    id=$(admin key list --json | python3 -c 'import json,sys; print([x["id"] for x in json.load(sys.stdin) if x["role"]=="admin"][0])')
    expect_exit 1 wonly key remove "$id" || return 1
    expect_exit 1 env COFFER_PASSWORD=wo-pw COFFER_NEW_PASSWORD=x "$COFFER" --repo "$REPO" key add || return 1
}

# Everything the write-only key can decrypt: the index files and locks. None of it may contain
# file contents or names.
case_reachable_bytes() {
    local dump="$TMP/reachable"
    : > "$dump"
    for f in "$REPO"/index/*; do
        wonly cat index "$(basename "$f")" >> "$dump" 2>/dev/null || { note "the write-only key cannot read index $(basename "$f")"; return 1; }
    done
    # and try every other object: none may open
    local opened=0
    for f in "$REPO"/snapshots/*; do
        wonly cat snapshot "$(basename "$f")" >> "$dump" 2>/dev/null && opened=$((opened + 1))
    done
    check "a write-only key opened $opened snapshot documents" test "$opened" = 0
    check "the write-only key could read no index at all" test -s "$dump"
    grep -q '"blobs"' "$dump" || note "index dump has no blob count"
    check "decryptable bytes contain the secret file's content" bash -c "! grep -q '$SECRET' '$dump'"
    check "decryptable bytes contain a file name" bash -c "! grep -q 'secret.txt' '$dump'"
    # 32 bytes of the random file, hex-encoded as cat would print them
    local sample
    sample=$(head -c 1000032 "$SRC/a/big" | tail -c 32 | od -An -tx1 | tr -d ' \n')
    check "decryptable bytes contain file content" bash -c "! grep -qi '$sample' '$dump'"
}

case_admin_reads_all() {
    expect_exit 0 admin restore latest --target "$TMP/restored" -q || return 1
    check "admin restore of the write-only snapshot differs" diff -r "$SRC/b" "$TMP/restored$SRC/b"
    expect_exit 0 admin check --read-data || return 1
    expect_exit 0 admin snapshots --json || return 1
    check "admin does not see both snapshots" test "$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$OUT")" = 2
}

case_reencrypt() {
    # the admin can re-seal what the write-only host wrote under its own data key
    expect_exit 0 env COFFER_PASSWORD=admin-pw "$COFFER" --repo "$REPO" rewrite --reencrypt || return 1
    expect_exit 0 admin check --read-data || return 1
    expect_exit 0 admin restore latest --target "$TMP/restored2" -q || return 1
    check "restore after re-encryption differs" diff -r "$SRC/b" "$TMP/restored2$SRC/b"
}

run_case "setup: admin backup and a write-only key" case_setup
run_case "write-only backup deduplicates against the admin's data" case_backup_dedups
run_case "write-only key cannot read snapshots, trees or packs" case_cannot_read
run_case "write-only key cannot forget, prune or manage keys" case_cannot_destroy
run_case "bytes a write-only key can decrypt hold no file content or names" case_reachable_bytes
run_case "admin restores and checks what the write-only key wrote" case_admin_reads_all
run_case "admin re-encrypts write-only packs under its data key" case_reencrypt
finish
