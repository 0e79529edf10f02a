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
    [[ "${COFFER_BIN:-}" == *asan* ]] && packs=2000
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

# generation of every pack and sealed object in a local repository, straight from the files
object_gens() {
    python3 - "$1" <<'PY'
import os, struct, sys
root = sys.argv[1]
for top, off in (("data", 8), ("snapshots", 12), ("archive", 12)):
    for d, _, files in os.walk(os.path.join(root, top)):
        for f in files:
            if f.startswith(".tmp"):
                continue
            with open(os.path.join(d, f), "rb") as fh:
                head = fh.read(16)
            print(top, f, struct.unpack("<I", head[off:off + 4])[0])
PY
}

# packs per generation from `key list --packs --json`, as "gen:count" words
gen_counts() {
    env COFFER_PASSWORD="$1" "$COFFER" --repo "$2" key list --packs --json | tail -n 1 |
        python3 -c 'import json,sys; print(" ".join("%d:%d" % (g["generation"], g["packs"]) for g in sorted(json.load(sys.stdin)["packs_by_generation"], key=lambda g: g["generation"])))'
}

# a WAL segment of 1 MiB that wal-push accepts (long page header naming its own address),
# random after the header: make_segment NAME FILE
make_segment() {
    python3 - "$1" "$2" <<'PY'
import os, struct, sys
name, path = sys.argv[1], sys.argv[2]
size = 1 << 20
segno = int(name[8:16], 16) * (0x100000000 // size) + int(name[16:24], 16)
d = bytearray(os.urandom(size))
struct.pack_into('<HHIQ', d, 0, 0xD110, 0x0002, int(name[:8], 16), segno * size)
struct.pack_into('<I', d, 32, size)
open(path, 'wb').write(d)
PY
}

case_generations() {
    local r="$TMP/gens" src="$TMP/gsrc" p0="g0-$RANDOM$RANDOM" p1="g1-$RANDOM$RANDOM" p2="g2-$RANDOM$RANDOM"
    local khex
    khex=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    printf '%s' "$khex" > "$TMP/gkeyfile"
    mkdir -p "$src"
    head -c 1500000 /dev/urandom > "$src/g0"
    expect_exit 0 env COFFER_PASSWORD="$p0" "$COFFER" --repo "$r" init --kdf-log-n 10 --pack-size 262144 || return 1
    expect_exit 0 env COFFER_PASSWORD="$p0" COFFER_NEW_KEY="$khex" "$COFFER" --repo "$r" key add || return 1
    expect_exit 0 env COFFER_PASSWORD="$p0" "$COFFER" --repo "$r" backup "$src" -q || return 1
    cp -a "$src" "$TMP/gstate1"
    # archived database logs too: one WAL segment sealed under each of generations 0 and 1
    local seg0=000000010000000000000003 seg1=000000010000000000000004
    make_segment "$seg0" "$TMP/$seg0"
    make_segment "$seg1" "$TMP/$seg1"
    expect_exit 0 env COFFER_PASSWORD="$p0" "$COFFER" --repo "$r" wal-push "$TMP/$seg0" || return 1
    expect_exit 0 env COFFER_PASSWORD="$p0" COFFER_NEW_PASSWORD="$p1" "$COFFER" --repo "$r" key rotate --kdf-log-n 10 || return 1
    head -c 1500000 /dev/urandom > "$src/g1"
    expect_exit 0 env COFFER_PASSWORD="$p1" "$COFFER" --repo "$r" backup "$src" -q || return 1
    expect_exit 0 env COFFER_PASSWORD="$p1" "$COFFER" --repo "$r" wal-push "$TMP/$seg1" || return 1
    cp -a "$src" "$TMP/gstate2"
    expect_exit 0 env COFFER_PASSWORD="$p1" COFFER_NEW_PASSWORD="$p2" "$COFFER" --repo "$r" key rotate --kdf-log-n 10 || return 1
    rm "$src/g0"
    head -c 1500000 /dev/urandom > "$src/g2"
    expect_exit 0 env COFFER_PASSWORD="$p2" "$COFFER" --repo "$r" backup "$src" -q || return 1
    cp -a "$src" "$TMP/gstate3"
    local before after
    before=$(gen_counts "$p2" "$r")
    echo "# packs by generation after two rotations: $before"
    [[ "$before" =~ ^0:[1-9][0-9]*\ 1:[1-9][0-9]*\ 2:[1-9][0-9]*$ ]] || { note "not three generations with packs: '$before'"; return 1; }
    object_gens "$r" | sort > "$TMP/gens.before"

    # a generation still in use cannot be destroyed
    expect_exit 2 env COFFER_PASSWORD="$p2" "$COFFER" --repo "$r" key retire-generation 1 || return 1
    output_has "still in use by [1-9][0-9]* packs" "refusal to retire a used generation does not say why"
    expect_exit 2 env COFFER_PASSWORD="$p2" "$COFFER" --repo "$r" key retire-generation 2 || return 1
    output_has "current" "refusal to retire the current generation does not say why"

    # re-encrypt generation 1 only: generation 0's packs stay as they are
    expect_exit 0 env COFFER_PASSWORD="$p2" "$COFFER" --repo "$r" rewrite --reencrypt --generation 1 --json || return 1
    local retired
    retired=$(json_get "$OUT" "j['generations_retired']")
    check "rewrite --generation 1 did not retire generation 1 ($retired)" test "$retired" = 1
    check "rewrite --generation 1 did not re-seal the one archive object of generation 1" \
        test "$(json_get "$OUT" "j['archive_resealed']")" = 1
    after=$(gen_counts "$p2" "$r")
    echo "# packs by generation after rewrite --generation 1: $after"
    check "generation 0's pack count changed: '$before' -> '$after'" test "${before%% *}" = "${after%% *}"
    [[ "$after" != *" 1:"* ]] || note "packs of generation 1 remain: '$after'"
    object_gens "$r" | sort > "$TMP/gens.after"
    check "a pack of generation 0 or 2 was rewritten or removed" \
        bash -c "comm -23 <(grep -E '^data .* (0|2)\$' '$TMP/gens.before') '$TMP/gens.after' | grep -q . && exit 1 || exit 0"
    check "a snapshot or archive object of generation 0 was re-sealed" \
        bash -c "comm -23 <(grep -E '^(snapshots|archive) .* 0\$' '$TMP/gens.before') '$TMP/gens.after' | grep -q . && exit 1 || exit 0"
    check "the archive object of generation 1 is not under generation 2 now" grep -q "^archive $seg1 2\$" "$TMP/gens.after"
    check "an object of generation 1 remains" bash -c "! grep -q ' 1\$' '$TMP/gens.after'"
    expect_exit 0 env COFFER_PASSWORD="$p2" "$COFFER" --repo "$r" key list --json || return 1
    check "the key in use still holds generation 1" \
        python3 -c 'import json,sys; k=[k for k in json.load(open(sys.argv[1])) if k["current"]][0]; sys.exit(0 if k["generations"] == [0, 2] else 1)' "$OUT"

    # generation 0: re-encrypted, but the key-file slot still seals new data under it
    expect_exit 2 env COFFER_PASSWORD="$p2" "$COFFER" --repo "$r" key retire-generation 0 || return 1
    output_has "in use by [1-9][0-9]* packs" "refusal to retire generation 0 does not name its packs"
    expect_exit 0 env COFFER_PASSWORD="$p2" "$COFFER" --repo "$r" rewrite --reencrypt --generation 0 || return 1
    output_has "key slot [0-9a-f]{8} still seals new data under it" "rewrite does not say why generation 0 is kept"
    expect_exit 2 env COFFER_PASSWORD="$p2" "$COFFER" --repo "$r" key retire-generation 0 || return 1
    output_has "still seals new data" "retiring a generation another slot writes under is not refused"
    local old
    old=$(env COFFER_PASSWORD="$p2" "$COFFER" --repo "$r" key list --json | python3 -c 'import json,sys; print([k["id"] for k in json.load(sys.stdin) if k["kind"]=="key"][0])')
    expect_exit 0 env COFFER_PASSWORD="$p2" "$COFFER" --repo "$r" key remove "$old" || return 1
    expect_exit 0 env COFFER_PASSWORD="$p2" "$COFFER" --repo "$r" key retire-generation 0 || return 1
    expect_exit 1 env COFFER_PASSWORD="$p2" "$COFFER" --repo "$r" key retire-generation 0 || return 1
    expect_exit 0 env COFFER_PASSWORD="$p2" "$COFFER" --repo "$r" key list --json || return 1
    check "the key in use holds more than generation 2" \
        python3 -c 'import json,sys; k=[k for k in json.load(open(sys.argv[1])) if k["current"]][0]; sys.exit(0 if k["generations"] == [2] else 1)' "$OUT"
    after=$(gen_counts "$p2" "$r")
    check "packs of another generation than 2 remain: '$after'" bash -c "[[ '$after' =~ ^2:[1-9][0-9]*\$ ]]"
    object_gens "$r" > "$TMP/gens.final"
    check "a pack, snapshot or archive object is sealed under another generation than 2" bash -c "! grep -vq ' 2\$' '$TMP/gens.final'"
    check "not two archive objects in the final listing" test "$(grep -c '^archive ' "$TMP/gens.final")" = 2

    # old secrets open nothing
    expect_exit 11 env COFFER_PASSWORD="$p0" "$COFFER" --repo "$r" snapshots || return 1
    expect_exit 11 env COFFER_PASSWORD="$p1" "$COFFER" --repo "$r" snapshots || return 1
    expect_exit 11 "$COFFER" --repo "$r" --key-file "$TMP/gkeyfile" snapshots || return 1
    # every snapshot restores bit-identical, oldest first
    local ids id n=0
    ids=$(env COFFER_PASSWORD="$p2" "$COFFER" --repo "$r" snapshots --json | python3 -c 'import json,sys; print(" ".join(s["id"] for s in sorted(json.load(sys.stdin), key=lambda s: s["time"])))')
    for id in $ids; do
        n=$((n + 1))
        expect_exit 0 env COFFER_PASSWORD="$p2" "$COFFER" --repo "$r" restore "$id" --target "$TMP/grest$n" -q || return 1
        check "snapshot $n does not restore bit-identical" diff -r "$TMP/gstate$n" "$TMP/grest$n$src"
    done
    check "not three snapshots ($n)" test "$n" = 3
    # the archived logs come back bit-identical under the only generation left
    for id in "$seg0" "$seg1"; do
        expect_exit 0 env COFFER_PASSWORD="$p2" "$COFFER" --repo "$r" wal-fetch "$id" "$TMP/fetched-$id" || return 1
        check "WAL segment $id does not come back bit-identical" cmp -s "$TMP/$id" "$TMP/fetched-$id"
    done
    expect_exit 0 env COFFER_PASSWORD="$p2" "$COFFER" --repo "$r" check --read-data || return 1
}

run_case "rotate, re-encrypt, remove the old slot: old secrets open nothing" case_rotate_reencrypt
run_case "key rotate takes seconds on a repository of many packs" case_rotate_many_packs
run_case "append-only key: refused operations change nothing in storage" case_append_only_storage
run_case "three generations: rewrite --generation re-seals one, retire-generation destroys it" case_generations
run_case "no password or key in output, errors, --json or the repository" case_no_secrets_in_output
finish
