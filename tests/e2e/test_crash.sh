#!/usr/bin/env bash
# test_crash.sh - crash safety: a seeded loop starts `coffer backup`, `coffer forget
# --keep-last 1 --prune` or `coffer prune` (after an uninterrupted forget, so that it has work)
# on a ~40 MB tree that changes between rounds, and kills it with SIGKILL after a random delay
# from the seed: a fraction of the command's last full duration (x 1.3), at most 1.5 s, so the
# kills land throughout each command rather than after it finished. After every kill:
# `coffer unlock` works, `coffer check --read-data` passes, and every snapshot listed restores
# to exactly the tree state its backup captured (backups are tagged with their round). At the
# end the next backup and a prune succeed. Then a torn write: a pack no index names (left by a
# killed backup) is truncated to half; check must report it, and the next backup and a prune
# must recover (prune deletes unindexed packs).
#
#   SEED=N   the seed (default 1)          ITER=N   rounds (default 20; 200 with SLOW=1)
#
# Prints the kill points (how many runs of each command were killed mid-way, and when).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh" || exit 1

SEED="${SEED:-1}"
if [[ -n "${ITER:-}" ]]; then
    :
elif [[ "${SLOW:-0}" == 1 ]]; then
    ITER=200
else
    ITER=20
fi
NFILES=16
FILE_KB=2560   # ~40 MB
if [[ "${COFFER_BIN:-}" == *asan* ]]; then
    FILE_KB=1280
    [[ "${SLOW:-0}" == 1 ]] || ITER=12
fi
export NFILES FILE_KB

SRC="$TMP/src"
STATES="$TMP/states"
REPO="$TMP/repo"
export COFFER_REPO="$REPO"
mkdir -p "$STATES"

# churn.py DIR SEED: change the tree: rewrite some files with new random data (new file
# renamed over the old one, so hard-linked copies of earlier states keep their content),
# sometimes delete one, add one, or add a directory. Without files yet: create NFILES.
cat >"$TMP/churn.py" <<'EOF'
import os, random, sys
d, seed = sys.argv[1], int(sys.argv[2])
nfiles, kb = int(os.environ['NFILES']), int(os.environ['FILE_KB'])
r = random.Random(seed)
def write(p, size):
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p + '.new', 'wb') as f:
        f.write(os.urandom(size))
    os.rename(p + '.new', p)
files = sorted(os.path.join(root, n) for root, _, names in os.walk(d) for n in names)
if not files:
    for i in range(nfiles):
        write(os.path.join(d, 'f%03d.bin' % i), kb * 1024)
    sys.exit(0)
for p in r.sample(files, r.randint(1, max(1, len(files) // 2))):
    write(p, r.randint(kb // 5, kb * 2) * 1024)
if r.random() < 0.2 and len(files) > nfiles // 2:
    os.unlink(r.choice(files))
if r.random() < 0.3:
    write(os.path.join(d, 'sub%d' % r.randint(0, 3), 'n%06d.bin' % r.randint(0, 999999)),
          r.randint(1, kb) * 1024)
EOF
churn() { python3 "$TMP/churn.py" "$@"; }

# the plan: one line per round, "OP U CHURN_SEED", all from SEED. The kill comes U x (the
# command's last uninterrupted duration x 1.3, at most 1.5 s) after the start, so that kills
# land throughout each command (its first run: U x 1.5 s).
python3 - "$SEED" "$ITER" >"$TMP/plan" <<'EOF'
import random, sys
r = random.Random(int(sys.argv[1]))
for i in range(int(sys.argv[2])):
    x = r.random()
    op = 'backup' if x < 0.5 else ('forget' if x < 0.75 else 'prune')
    print(op, '%.4f' % r.random(), r.randint(1, 10**9))
EOF

new_repo "$REPO" --pack-size 1048576
churn "$SRC" 0

declare -A KILLED=([backup]=0 [forget]=0 [prune]=0)
declare -A COMPLETED=([backup]=0 [forget]=0 [prune]=0)
declare -A DELAYS=([backup]="" [forget]="" [prune]="")
declare -A DUR_US=([backup]=1500000 [forget]=1500000 [prune]=1500000) # last full run
declare -A VERIFIED=()   # snapshot id -> 1 once restored and compared

# verify_snapshots ALL: every snapshot's tag names a round whose tree state it must equal.
# Snapshots verified before are skipped unless ALL=1 (after a prune ran).
verify_snapshots() {
    local all=$1 id tag
    expect_exit 0 cf snapshots --json || return 1
    json_get "$OUT" "'\n'.join(s['id'] + ' ' + ','.join(s['tags']) for s in j)" >"$TMP/snaps" ||
        { note "snapshots --json is not a list"; return 1; }
    while read -r id tag; do
        [[ -z "$id" ]] && continue
        [[ $all == 0 && -n "${VERIFIED[$id]:-}" ]] && continue
        if [[ ! "$tag" =~ ^(r|torn)[0-9]+$ || ! -d "$STATES/$tag" ]]; then
            note "snapshot ${id:0:8} has tags '$tag': no backup was started for it"
            continue
        fi
        local t="$TMP/verify"
        chmod -R u+rwX "$t" 2>/dev/null
        rm -rf "$t"
        expect_exit 0 cf restore "$id" --target "$t" || continue
        if assert_same_tree "$STATES/$tag" "$t$SRC"; then
            VERIFIED[$id]=1
        else
            note "snapshot ${id:0:8} ($tag) does not restore to the tree it backed up"
        fi
    done <"$TMP/snaps"
    chmod -R u+rwX "$TMP/verify" 2>/dev/null
    rm -rf "$TMP/verify"
}

round() {
    local i=$1 op=$2 u=$3 cseed=$4 rc=0 pid
    local -a cmd
    case $op in
    backup)
        churn "$SRC" "$cseed"
        cp -al "$SRC" "$STATES/r$i"
        cmd=(backup "$SRC" --tag "r$i")
        ;;
    forget) cmd=(forget --keep-last 1 --prune) ;;
    prune)
        # give prune something to do: forget (not killed) all but the newest two snapshots
        expect_exit 0 cf forget --keep-last 2 || return 1
        cmd=(prune)
        ;;
    esac
    local max_us=$((DUR_US[$op] * 13 / 10))
    [[ $max_us -gt 1500000 ]] && max_us=1500000
    local delay
    delay=$(python3 -c "print('%.3f' % ($u * $max_us / 1e6))")
    local t0=${EPOCHREALTIME/./}
    "$COFFER" "${cmd[@]}" >"$TMP/op.out" 2>&1 &
    pid=$!
    BG_PIDS+=("$pid")
    sleep "$delay"
    local killed=0
    if kill -9 "$pid" 2>/dev/null; then
        killed=1
    fi
    wait "$pid" 2>/dev/null || rc=$?
    # the process may have exited between the test and the kill: its status tells
    if [[ $killed == 1 && $rc -ne 137 ]]; then
        killed=0
    fi
    if [[ $killed == 1 ]]; then
        KILLED[$op]=$((KILLED[$op] + 1))
        DELAYS[$op]+=" $delay/$(python3 -c "print('%.2f' % ($max_us / 1e6))")"
    else
        COMPLETED[$op]=$((COMPLETED[$op] + 1))
        DUR_US[$op]=$((${EPOCHREALTIME/./} - t0))
        if [[ $rc -ne 0 ]]; then
            note "round $i: '${cmd[*]}' exited $rc without being killed:"$'\n'"$(tail -n 3 "$TMP/op.out")"
        fi
    fi
    expect_exit 0 cf unlock || return 1
    [[ -z "$(ls "$REPO/locks" 2>/dev/null)" ]] || note "round $i: locks remain after unlock: $(ls -A "$REPO/locks")"
    if ! expect_exit 0 cf check --read-data; then
        note "round $i: check failed after $op (killed=$killed after ${delay}s)"
        return 1
    fi
    # a backup that completed published its snapshot
    if [[ $op == backup && $killed == 0 && $rc == 0 ]]; then
        expect_exit 0 cf snapshots --json --tag "r$i" &&
            { [[ "$(json_get "$OUT" 'len(j)')" == 1 ]] || note "round $i: the completed backup's snapshot is missing"; }
    fi
    if [[ $op == forget && $killed == 0 && $rc == 0 ]]; then
        expect_exit 0 cf snapshots --json
        [[ "$(json_get "$OUT" 'len(j)')" -le 1 ]] || note "round $i: forget --keep-last 1 left $(json_get "$OUT" 'len(j)') snapshots"
    fi
    verify_snapshots "$([[ $op == backup ]] && echo 0 || echo 1)"
}

case_loop() {
    local i=0 op u cseed failed=0
    while read -r op u cseed; do
        i=$((i + 1))
        CASE_ERRS=""
        round "$i" "$op" "$u" "$cseed" || true
        if [[ -n "$CASE_ERRS" ]]; then
            fail "round $i ($op, kill at fraction $u of its window)" "${CASE_ERRS%$'\n'}"
            failed=1
        fi
    done <"$TMP/plan"
    CASE_ERRS=""
    local op_
    local total=0
    for op_ in backup forget prune; do
        total=$((total + KILLED[$op_]))
    done
    echo "measured: seed $SEED, $ITER rounds, $total kill points:" \
        "backup killed ${KILLED[backup]} / completed ${COMPLETED[backup]}," \
        "forget --prune killed ${KILLED[forget]} / completed ${COMPLETED[forget]}," \
        "prune killed ${KILLED[prune]} / completed ${COMPLETED[prune]}"
    for op_ in backup forget prune; do
        [[ -n "${DELAYS[$op_]}" ]] && echo "measured: $op_ killed after (s / window s):${DELAYS[$op_]}"
    done
    [[ $total -gt 0 ]] || note "no command was killed mid-way: the kill points are all misses"
    return $failed
}

case_after_loop() {
    churn "$SRC" "$((SEED * 7 + 1))"
    local n=$((ITER + 1))
    cp -al "$SRC" "$STATES/r$n"
    expect_exit 0 cf backup "$SRC" --tag "r$n" || return 1
    expect_exit 0 cf prune || return 1
    expect_exit 0 cf check --read-data || return 1
    verify_snapshots 1
}

# Packs in data/ that no index file names.
unindexed_packs() {
    local ix
    : >"$TMP/indexed"
    for ix in "$REPO"/index/*; do
        [[ -f "$ix" && "${ix##*/}" != .tmp-* ]] || continue
        "$COFFER" cat index "${ix##*/}" 2>/dev/null | python3 -c '
import json, sys
for p in json.load(sys.stdin).get("packs", []):
    print(p)' >>"$TMP/indexed" || return 1
    done
    sort -u "$TMP/indexed" -o "$TMP/indexed"
    find "$REPO/data" -type f ! -name '.tmp-*' -printf '%T@ %f %p\n' | sort -n |
        while read -r _ name path; do
            grep -qx "$name" "$TMP/indexed" || echo "$path"
        done
}

case_torn_write() {
    local try pack="" pid
    for try in 1 2 3 4 5 6; do
        churn "$SRC" "$((SEED * 1000 + try))"
        local before
        before=$(find "$REPO/data" -type f ! -name '.tmp-*' | wc -l)
        cp -al "$SRC" "$STATES/torn$try"
        "$COFFER" backup "$SRC" --tag "torn$try" >"$TMP/torn.out" 2>&1 &
        pid=$!
        BG_PIDS+=("$pid")
        local _k
        for _k in $(seq 1 500); do
            [[ $(find "$REPO/data" -type f ! -name '.tmp-*' | wc -l) -ge $((before + 1 + try % 3)) ]] && break
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.005
        done
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        expect_exit 0 cf unlock || return 1
        pack=$(unindexed_packs | tail -n 1)
        [[ -n "$pack" ]] && break
    done
    if [[ -z "$pack" ]]; then
        note "could not produce an unindexed pack by killing a backup (6 tries)"
        return 1
    fi
    local size name
    size=$(stat -c %s "$pack")
    name=$(basename "$pack")
    truncate -s $((size / 2)) "$pack"
    echo "measured: truncated unindexed pack ${name:0:16} from $size to $((size / 2)) bytes (try $try)"
    expect_exit 12 cf check --read-data || return 1
    output_has "${name:0:16}" "check does not name the truncated pack $name"
    # recovery
    local n=$((ITER + 2))
    cp -al "$SRC" "$STATES/r$n"
    expect_exit 0 cf backup "$SRC" --tag "r$n" || return 1
    expect_exit 0 cf prune || return 1
    check "prune did not delete the truncated unindexed pack" test ! -e "$pack"
    expect_exit 0 cf check --read-data || return 1
    verify_snapshots 1
}

# Files a killed process was writing are garbage too: after the final prune none remain.
case_no_partial_files() {
    local partial
    partial=$(find "$REPO" -name '.tmp-*' -printf '%P (%s bytes)\n')
    [[ -z "$partial" ]] ||
        note "$(echo "$partial" | wc -l) partial files of killed processes remain after prune ($(find "$REPO" -name '.tmp-*' -printf '%s\n' | awk '{s+=$1} END {print s}') bytes), e.g.:"$'\n'"$(echo "$partial" | head -n 3)"
}

run_case "kill loop (seed $SEED, $ITER rounds)" case_loop
run_case "next backup and prune after the loop" case_after_loop
run_case "torn write of an unindexed pack: check reports it, backup + prune recover" case_torn_write
run_case "no partial files of killed processes left after prune" case_no_partial_files
finish
