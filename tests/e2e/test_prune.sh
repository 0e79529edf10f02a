#!/usr/bin/env bash
# test_prune.sh - forget + prune on a churned dataset: ten backups of a tree of which ~30 % of
# the files are rewritten with new random data each round; forgetting all but the last two and
# pruning must bring the repository down to (about) the size of a fresh repository holding
# only those two states, keep them restorable bit for bit, and pass check --read-data. Dry runs
# change nothing; a prune with nothing to do is a no-op; repeated forget+prune cycles must not
# let unreclaimed space grow beyond --max-unused.
#
# Sizes are printed (the "measured" lines). Scaled down under ASan (COFFER_BIN with "asan").
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" || exit 1

ASAN=0
[[ "${COFFER_BIN:-}" == *asan* ]] && ASAN=1
NFILES=40      # files in the tree
MAXKB=1024     # file sizes: 64 KiB .. MAXKB KiB
ROUNDS=10
CHURN=12       # files rewritten per round (30 %)
CYCLES=12      # forget+prune cycles in the accumulation case
if [[ $ASAN == 1 ]]; then
    NFILES=24
    MAXKB=512
    CHURN=7
    CYCLES=8
fi
PACK="--pack-size 1048576"

SRC="$TMP/src"
STATES="$TMP/states"
REPO="$TMP/repo"        # forget --keep-last 2 --prune
REPO_B="$TMP/repo_b"    # the same history: forget, then prune --dry-run, then prune
FRESH="$TMP/fresh"      # only the two kept states
mkdir -p "$STATES"

# gen.py DIR SEED [COUNT]: without COUNT create NFILES files; with COUNT rewrite COUNT of them
# (chosen from SEED) with new random data, by writing a new file and renaming it over the old
# one (so hard-linked copies of earlier states keep their content).
cat >"$TMP/gen.py" <<'EOF'
import os, random, sys
d, seed = sys.argv[1], int(sys.argv[2])
nfiles, maxkb = int(os.environ['NFILES']), int(os.environ['MAXKB'])
r = random.Random(seed)
def write(i):
    p = os.path.join(d, 'sub%d' % (i % 3), 'f%02d.bin' % i)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p + '.new', 'wb') as f:
        f.write(os.urandom(r.randint(64, maxkb) * 1024))
    os.rename(p + '.new', p)
if len(sys.argv) > 3:
    for i in r.sample(range(nfiles), int(sys.argv[3])):
        write(i)
else:
    for i in range(nfiles):
        write(i)
EOF
export NFILES MAXKB
gen() { python3 "$TMP/gen.py" "$@"; }

# listing DIR: every file except locks, with size and mtime (to see rewrites).
listing() {
    (cd "$1" && find . -path ./locks -prune -o -type f -printf '%p %s %T@\n' | LC_ALL=C sort)
}

data_bytes() {
    du -sb "$1/data" | cut -f1
}

declare -a SNAP_ID

case_history() {
    new_repo "$REPO" $PACK
    gen "$SRC" 1
    local r
    for r in $(seq 1 "$ROUNDS"); do
        if [[ $r -gt 1 ]]; then
            gen "$SRC" "$r" "$CHURN"
        fi
        expect_exit 0 cf --repo "$REPO" backup "$SRC" --tag "r$r" --json || return 1
        SNAP_ID[$r]=$(json_get "$OUT" "j['snapshot_id']")
        [[ ${#SNAP_ID[$r]} == 64 ]] || { note "round $r: no snapshot id in the summary"; return 1; }
        cp -al "$SRC" "$STATES/r$r"
    done
    expect_exit 0 cf --repo "$REPO" snapshots --json || return 1
    check "expected $ROUNDS snapshots" test "$(json_get "$OUT" 'len(j)')" = "$ROUNDS"
    cp -a "$REPO" "$REPO_B"
    echo "measured: $ROUNDS rounds, tree $(du -sb "$SRC" | cut -f1) bytes, repository data $(data_bytes "$REPO") bytes"
}

case_forget_dry_run() {
    local before after
    before=$(listing "$REPO")
    expect_exit 0 cf --repo "$REPO" forget --keep-last 2 --prune --dry-run --json || return 1
    local fj="$TMP/forget_dry.json"
    grep -a '"message_type":"forget"' "$OUT" >"$fj" || { note "no forget summary"; return 1; }
    check "dry run: would_remove is not $((ROUNDS - 2))" \
        test "$(json_get "$fj" "j['would_remove']")" = "$((ROUNDS - 2))"
    check "dry run: removed is not 0" test "$(json_get "$fj" "j['removed']")" = 0
    after=$(listing "$REPO")
    [[ "$before" == "$after" ]] || note "forget --prune --dry-run changed the repository:"$'\n'"$(diff <(echo "$before") <(echo "$after") | head -n 10)"
}

case_forget_prune() {
    expect_exit 0 cf --repo "$REPO" forget --keep-last 2 --prune --json || return 1
    # the forget document, then the prune document
    local fj="$TMP/forget.json"
    grep -a '"message_type":"forget"' "$OUT" >"$fj" || { note "no forget summary"; return 1; }
    check "removed is not $((ROUNDS - 2))" test "$(json_get "$fj" "j['removed']")" = "$((ROUNDS - 2))"
    local kept
    kept=$(json_get "$fj" "' '.join(sorted(k['id'] for g in j['groups'] for k in g['keep']))")
    local want
    want=$(printf '%s\n' "${SNAP_ID[$((ROUNDS - 1))]}" "${SNAP_ID[$ROUNDS]}" | sort | tr '\n' ' ')
    [[ "$kept " == "$want" ]] || note "forget kept [$kept], expected the last two [$want]"
    grep -aq '"message_type":"prune"' "$OUT" || note "forget --prune printed no prune summary"
    expect_exit 0 cf --repo "$REPO" snapshots --json || return 1
    check "not 2 snapshots left" test "$(json_get "$OUT" 'len(j)')" = 2
    check "no lock left behind" test -z "$(ls -A "$REPO/locks")"
}

case_kept_restore() {
    local r ok=0
    for r in $((ROUNDS - 1)) "$ROUNDS"; do
        local t="$TMP/restore_r$r"
        expect_exit 0 cf --repo "$REPO" restore "${SNAP_ID[$r]}" --target "$t" || continue
        assert_same_tree "$STATES/r$r" "$t$SRC" || ok=1
        chmod -R u+rwX "$t"
        rm -rf "$t"
    done
    # the forgotten ones are gone
    run cf --repo "$REPO" restore "${SNAP_ID[1]}" --target "$TMP/restore_r1"
    [[ $RC -ne 0 ]] || note "a forgotten snapshot could still be restored"
    _crashed && note "restore of a forgotten snapshot crashed (exit $RC)"
    return $ok
}

case_check() {
    expect_exit 0 cf --repo "$REPO" check --read-data
}

case_size_vs_fresh() {
    new_repo "$FRESH" $PACK
    local r
    for r in $((ROUNDS - 1)) "$ROUNDS"; do
        chmod -R u+rwX "$SRC"
        rm -rf "$SRC"
        cp -a "$STATES/r$r" "$SRC"
        expect_exit 0 cf --repo "$FRESH" backup "$SRC" || return 1
    done
    local pruned fresh
    pruned=$(data_bytes "$REPO")
    fresh=$(data_bytes "$FRESH")
    python3 -c "print('measured: data/ after forget --prune %d bytes, fresh repository %d bytes, ratio %.3f' % ($pruned, $fresh, $pruned / $fresh))"
    python3 -c "import sys; sys.exit(0 if abs($pruned - $fresh) <= 0.10 * $fresh else 1)" ||
        note "pruned repository ($pruned bytes) is not within 10 % of a fresh one ($fresh bytes)"
}

case_prune_dry_run() {
    expect_exit 0 cf --repo "$REPO_B" forget --keep-last 2 || return 1
    cp -a "$REPO_B" "$TMP/repo_z"
    local before after
    before=$(listing "$REPO_B")
    expect_exit 0 cf --repo "$REPO_B" prune --dry-run --json || return 1
    local freed
    freed=$(json_get "$OUT" "j['bytes_freed']")
    [[ "$freed" =~ ^[0-9]+$ && "$freed" -gt 0 ]] || note "prune --dry-run reports nothing to free ($freed) after forgetting 8 snapshots"
    after=$(listing "$REPO_B")
    [[ "$before" == "$after" ]] || note "prune --dry-run changed the repository:"$'\n'"$(diff <(echo "$before") <(echo "$after") | head -n 10)"
    expect_exit 0 cf --repo "$REPO_B" prune --json || return 1
    local real
    real=$(json_get "$OUT" "j['bytes_freed']")
    [[ "$real" == "$freed" ]] || note "prune freed $real bytes, its dry run announced $freed"
    expect_exit 0 cf --repo "$REPO_B" check --read-data
}

# --max-unused 0 asks for no unused space at all: it must repack at least as much as a tiny
# positive threshold does (0 must not fall back to the 5 % default).
case_max_unused_zero() {
    local z="$TMP/repo_z"
    [[ -d "$z" ]] || { note "no copy of the forgotten repository"; return 1; }
    expect_exit 0 cf --repo "$z" prune --dry-run --max-unused 0 --json || return 1
    local zero tiny
    zero=$(json_get "$OUT" "j['packs_repacked']")
    expect_exit 0 cf --repo "$z" prune --dry-run --max-unused 0.001 --json || return 1
    tiny=$(json_get "$OUT" "j['packs_repacked']")
    [[ "$zero" == "$tiny" ]] || note "--max-unused 0 repacks $zero packs, --max-unused 0.001 repacks $tiny: 0 is treated as the 5 % default"
    expect_exit 0 cf --repo "$z" prune --max-unused 0 || return 1
    expect_exit 0 cf --repo "$z" check --read-data || return 1
    local after fresh
    after=$(data_bytes "$z")
    fresh=$(data_bytes "$FRESH")
    python3 -c "print('measured: data/ after prune --max-unused 0: %d bytes (%.3f x fresh)' % ($after, $after / $fresh))"
}

case_noop() {
    local before after
    before=$(listing "$REPO")
    expect_exit 0 cf --repo "$REPO" prune --dry-run --json || return 1
    after=$(listing "$REPO")
    [[ "$before" == "$after" ]] || note "prune --dry-run (nothing to do) changed the repository"
    expect_exit 0 cf --repo "$REPO" prune --json || return 1
    check "a prune with nothing to do deleted packs" test "$(json_get "$OUT" "j['packs_deleted']")" = 0
    check "a prune with nothing to do repacked packs" test "$(json_get "$OUT" "j['packs_repacked']")" = 0
    after=$(listing "$REPO")
    [[ "$before" == "$after" ]] || note "a prune with nothing to do changed the repository:"$'\n'"$(diff <(echo "$before") <(echo "$after") | head -n 10)"
    # a repository that never had garbage: no pack is touched
    local dbefore dafter
    dbefore=$(listing "$FRESH" | grep '^./data/')
    expect_exit 0 cf --repo "$FRESH" prune --json || return 1
    check "prune of a garbage-free repository deleted packs" test "$(json_get "$OUT" "j['packs_deleted']")" = 0
    dafter=$(listing "$FRESH" | grep '^./data/')
    [[ "$dbefore" == "$dafter" ]] || note "prune of a garbage-free repository changed data/"
    expect_exit 0 cf --repo "$FRESH" check --read-data
}

# Backup, forget --keep-last 1 --prune, again and again: partly used packs left below the
# --max-unused threshold must stay accounted for, so the waste does not accumulate.
case_cycles() {
    local cr="$TMP/cycles" cs="$TMP/cycles_src" cf_="$TMP/cycles_fresh" c
    new_repo "$cr" $PACK
    gen "$cs" 100
    for c in $(seq 1 "$CYCLES"); do
        [[ $c -gt 1 ]] && gen "$cs" "$((100 + c))" "$((CHURN / 2))"
        expect_exit 0 cf --repo "$cr" backup "$cs" || return 1
        expect_exit 0 cf --repo "$cr" forget --keep-last 1 --prune || return 1
    done
    expect_exit 0 cf --repo "$cr" check --read-data || return 1
    new_repo "$cf_" $PACK
    expect_exit 0 cf --repo "$cf_" backup "$cs" || return 1
    local have fresh
    have=$(data_bytes "$cr")
    fresh=$(data_bytes "$cf_")
    expect_exit 0 cf --repo "$cr" prune --dry-run --json || return 1
    local announced
    announced=$(json_get "$OUT" "j['bytes_freed']")
    python3 -c "print('measured: after %d backup+forget+prune cycles data/ is %d bytes, fresh %d (ratio %.3f); prune --dry-run would free %s' % ($CYCLES, $have, $fresh, $have / $fresh, '$announced'))"
    python3 -c "import sys; sys.exit(0 if $have <= 1.10 * $fresh else 1)" ||
        note "after $CYCLES forget+prune cycles the repository holds $have bytes, $(python3 -c "print('%.0f' % (100.0 * ($have - $fresh) / $fresh))") % more than a fresh one ($fresh): unused space left in kept packs is no longer counted (prune --dry-run would free $announced bytes)"
}

run_case "ten churned backups" case_history
run_case "forget --keep-last 2 --prune --dry-run changes nothing" case_forget_dry_run
run_case "forget --keep-last 2 --prune removes 8 snapshots" case_forget_prune
run_case "kept snapshots restore bit-identical" case_kept_restore
run_case "check --read-data after prune" case_check
run_case "pruned repository within 10 % of a fresh one" case_size_vs_fresh
run_case "prune --dry-run changes nothing and announces what prune frees" case_prune_dry_run
run_case "prune --max-unused 0 repacks every partly used pack" case_max_unused_zero
run_case "prune with nothing to remove is a no-op" case_noop
run_case "repeated forget --prune cycles keep waste bounded" case_cycles
finish
