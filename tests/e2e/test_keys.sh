#!/usr/bin/env bash
# Key slots, rotation and re-encryption, append-only keys at the storage level, and secrets
# never showing up in output.
source "$(dirname "$0")/lib.sh" || exit 1

SRC="$TMP/src"
REPO="$TMP/repo"
mkdir -p "$SRC"
head -c 3000000 /dev/urandom > "$SRC/r1"
seq 1 200000 > "$SRC/s1"
OLDPW="old-pw-$RANDOM$RANDOM"
NEWPW="new-pw-$RANDOM$RANDOM"
KEYHEX=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s' "$KEYHEX" > "$TMP/keyfile"

c() { "$COFFER" --repo "$REPO" "$@"; }

# every repository object, with size: what storage holds
listing() { (cd "$1" && find . -type f ! -name '.tmp*' -printf '%p %s\n' | sort); }

case_rotate_reencrypt() {
    expect_exit 0 env COFFER_PASSWORD="$OLDPW" "$COFFER" --repo "$REPO" init --kdf-log-n 10 || return 1
    expect_exit 0 env COFFER_PASSWORD="$OLDPW" "$COFFER" --repo "$REPO" backup "$SRC" -q || return 1
    # a key-file slot beside the password
    expect_exit 0 env COFFER_PASSWORD="$OLDPW" COFFER_NEW_KEY="$KEYHEX" "$COFFER" --repo "$REPO" key add || return 1
    expect_exit 0 env COFFER_KEY="$KEYHEX" "$COFFER" --repo "$REPO" snapshots -q || return 1
    # rotate: a new generation and a new password for the slot in use
    expect_exit 0 env COFFER_PASSWORD="$OLDPW" COFFER_NEW_PASSWORD="$NEWPW" "$COFFER" --repo "$REPO" key rotate --kdf-log-n 10 || return 1
    echo "more data after the rotation" >> "$SRC/s1"
    expect_exit 0 env COFFER_PASSWORD="$NEWPW" "$COFFER" --repo "$REPO" backup "$SRC" -q || return 1
    expect_exit 0 env COFFER_PASSWORD="$NEWPW" "$COFFER" --repo "$REPO" key list --packs || return 1
    output_has "generation 0: [1-9]" "key list does not show packs of the old generation"
    output_has "generation 1: [1-9]" "key list does not show packs of the new generation"
    expect_exit 0 env COFFER_PASSWORD="$NEWPW" "$COFFER" --repo "$REPO" rewrite --reencrypt || return 1
    expect_exit 0 env COFFER_PASSWORD="$NEWPW" "$COFFER" --repo "$REPO" key list --packs || return 1
    if grep -aq "generation 0:" "$OUT"; then note "packs of generation 0 remain after rewrite --reencrypt"; fi
    # remove the old key-file slot
    local old
    old=$(env COFFER_PASSWORD="$NEWPW" "$COFFER" --repo "$REPO" key list --json | python3 -c 'import json,sys; print([k["id"] for k in json.load(sys.stdin) if k["kind"]=="key"][0])')
    expect_exit 0 env COFFER_PASSWORD="$NEWPW" "$COFFER" --repo "$REPO" key remove "$old" || return 1
    # the old password and the old key file open nothing
    expect_exit 11 env COFFER_PASSWORD="$OLDPW" "$COFFER" --repo "$REPO" snapshots || return 1
    expect_exit 11 "$COFFER" --repo "$REPO" --key-file "$TMP/keyfile" snapshots || return 1
    # every snapshot restores bit-identical with the new password
    local ids id n=0
    ids=$(env COFFER_PASSWORD="$NEWPW" "$COFFER" --repo "$REPO" snapshots --json | python3 -c 'import json,sys; print(" ".join(s["id"] for s in json.load(sys.stdin)))')
    for id in $ids; do
        n=$((n + 1))
        expect_exit 0 env COFFER_PASSWORD="$NEWPW" "$COFFER" --repo "$REPO" restore "$id" --target "$TMP/r$n" --verify -q || return 1
    done
    check "not both snapshots were restored" test "$n" = 2
    check "the latest restore differs from the source" diff -r "$SRC" "$TMP/r2$SRC"
    expect_exit 0 env COFFER_PASSWORD="$NEWPW" "$COFFER" --repo "$REPO" check --read-data || return 1
}

case_rotate_many_packs() {
    # key rotate never reads packs: its time does not depend on their number
    local r="$TMP/many" packs=10000
    [[ "$COFFER" == *asan* ]] && packs=2000
    mkdir -p "$TMP/manysrc"
    # packs of 64 KiB: enough incompressible data for $packs of them
    head -c $((packs * 90000)) /dev/urandom > "$TMP/manysrc/data"
    expect_exit 0 env COFFER_PASSWORD=pw "$COFFER" --repo "$r" init --kdf-log-n 10 --pack-size 65536 --chunk-min 16384 --chunk-avg 32768 --chunk-max 65536 || return 1
    expect_exit 0 env COFFER_PASSWORD=pw "$COFFER" --repo "$r" backup "$TMP/manysrc" -q || return 1
    local have
    have=$(find "$r/data" -type f ! -name '.tmp*' | wc -l)
    local t0 t1
    t0=$(date +%s.%N)
    expect_exit 0 env COFFER_PASSWORD=pw COFFER_NEW_PASSWORD=pw2 "$COFFER" --repo "$r" key rotate --kdf-log-n 10 || return 1
    t1=$(date +%s.%N)
    python3 -c "print('# measured: key rotate on a repository of %d packs took %.2f s' % ($have, $t1 - $t0))"
    check "fewer packs than planned ($have)" test "$have" -ge "$packs"
    check "key rotate took more than 10 s" python3 -c "import sys; sys.exit(0 if $t1 - $t0 < 10 else 1)"
    rm -rf "$r" "$TMP/manysrc"
}

case_append_only_storage() {
    local r="$TMP/append"
    expect_exit 0 env COFFER_PASSWORD=admin "$COFFER" --repo "$r" init --kdf-log-n 10 || return 1
    expect_exit 0 env COFFER_PASSWORD=admin "$COFFER" --repo "$r" backup "$SRC" -q || return 1
    expect_exit 0 env COFFER_PASSWORD=admin COFFER_NEW_PASSWORD=app "$COFFER" --repo "$r" key add --append-only --kdf-log-n 10 || return 1
    echo "appended" > "$SRC/appended.txt"
    expect_exit 0 env COFFER_PASSWORD=app "$COFFER" --repo "$r" backup "$SRC" -q || return 1
    local before after admin_id
    admin_id=$(env COFFER_PASSWORD=app "$COFFER" --repo "$r" key list --json | python3 -c 'import json,sys; print([k["id"] for k in json.load(sys.stdin) if k["role"]=="admin"][0])')
    before=$(listing "$r")
    expect_exit 1 env COFFER_PASSWORD=app "$COFFER" --repo "$r" forget --keep-last 1 || true
    expect_exit 1 env COFFER_PASSWORD=app "$COFFER" --repo "$r" prune || return 1
    output_has "append-only" "prune refusal does not name the append-only key"
    expect_exit 1 env COFFER_PASSWORD=app "$COFFER" --repo "$r" key remove "$admin_id" || return 1
    expect_exit 1 env COFFER_PASSWORD=app "$COFFER" --repo "$r" rewrite --reencrypt || return 1
    expect_exit 1 env COFFER_PASSWORD=app COFFER_NEW_PASSWORD=x "$COFFER" --repo "$r" key rotate || return 1
    after=$(listing "$r")
    [[ "$before" == "$after" ]] || note "the refused operations changed storage:"$'\n'"$(diff <(echo "$before") <(echo "$after") | head -n 10)"
    rm -f "$SRC/appended.txt"
}

# Secrets (passwords, keys) never appear in output, --json output, errors, or the repository.
case_no_secrets_in_output() {
    local all="$TMP/all-output"
    : > "$all"
    local cmd
    for cmd in "snapshots" "snapshots --json" "check" "stats --json" "key list --json" "backup $SRC --json" "restore latest --target $TMP/sr --json"; do
        env COFFER_PASSWORD="$NEWPW" "$COFFER" --repo "$REPO" $cmd >> "$all" 2>&1
    done
    env COFFER_PASSWORD="wrong-$NEWPW" "$COFFER" --repo "$REPO" --json snapshots >> "$all" 2>&1
    env COFFER_KEY="$KEYHEX" "$COFFER" --repo "$REPO" --json snapshots >> "$all" 2>&1
    "$COFFER" --repo "$REPO" --password-command "echo $NEWPW" snapshots >> "$all" 2>&1
    "$COFFER" --repo "$REPO" --key-command "false" snapshots >> "$all" 2>&1
    check "a password appears in coffer's output" bash -c "! grep -aq -- '$NEWPW' '$all'"
    check "a key appears in coffer's output" bash -c "! grep -aqi -- '$KEYHEX' '$all'"
    check "a password is stored in the repository" bash -c "! grep -raq -- '$NEWPW' '$REPO'"
    check "a key is stored in the repository" bash -c "! grep -raqi -- '$KEYHEX' '$REPO'"
    check "no output was captured" test -s "$all"
}

run_case "rotate, re-encrypt, remove the old slot: old secrets open nothing" case_rotate_reencrypt
run_case "key rotate takes seconds on a repository of many packs" case_rotate_many_packs
run_case "append-only key: refused operations change nothing in storage" case_append_only_storage
run_case "no password or key in output, errors, --json or the repository" case_no_secrets_in_output
finish
