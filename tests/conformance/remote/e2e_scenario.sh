# e2e_scenario.sh - the full end-to-end scenario, run against every remote driver by s3.sh,
# azure.sh and sftp.sh (sourced, not run; CMake does not register it as a test): init; backup
# of a generated tree (thousands of files, random and compressible data, a hard link, a
# symlink); a second backup after changes, which must grow the repository only by the change;
# snapshots; restore --verify of both snapshots compared with the trees they were taken of;
# check --read-data; forget --keep-last 1 --prune; restore and check again; a second writer
# next to a live backup (prune refused with exit 13, a second backup admitted); the metadata
# cache deleted (COFFER_CACHE_DIR and the default ~/.cache/coffer) with everything still
# working. Also the leak scanner used by the credential tests.
#
# The sourcing script sets, then calls sc_scenario CASE_RUNNER (rl_case or case_run):
#   SC_COFFER     the coffer binary
#   SC_TMP        a scratch directory (this scenario uses $SC_TMP/sc)
#   SC_REPO       the repository URL (must not exist yet)
#   SC_STORED     a command printing the bytes the server holds for SC_REPO
#   SC_NLOCKS     a command printing the number of lock objects the server holds for SC_REPO
#   SC_SECRETS    an array of credential strings that must never appear in any output
# Each case prints what went wrong and returns non-zero.

SC_FILES=${SC_FILES:-3000}

_sc_dir() { echo "$SC_TMP/sc"; }

# sc_cf LOG ARGS...: coffer with the scenario's cache and temp directories; stdout and
# stderr go to $SC_TMP/sc/logs/LOG.{out,err}; returns coffer's status.
sc_cf() {
    local log=$1 d
    shift
    d=$(_sc_dir)
    mkdir -p "$d/logs" "$d/tmp"
    TMPDIR="$d/tmp" COFFER_CACHE_DIR="${SC_CACHE:-$d/cache}" \
        "$SC_COFFER" "$@" >"$d/logs/$log.out" 2>"$d/logs/$log.err" </dev/null
}

# sc_show LOG: the tail of a logged command's output.
sc_show() {
    local d
    d=$(_sc_dir)
    tail -n 8 "$d/logs/$1.out" "$d/logs/$1.err" 2>/dev/null | cut -c1-300
}

# sc_ok LOG ARGS...: sc_cf, which must succeed.
sc_ok() {
    local log=$1 rc=0
    sc_cf "$@" || rc=$?
    if [[ $rc -ne 0 ]]; then
        echo "coffer ${*:2} exited $rc:"
        sc_show "$log"
        return 1
    fi
}

# sc_snapcount LOG: the number of snapshots (from --json).
sc_snapcount() {
    sc_ok "$1" -r "$SC_REPO" --json snapshots || return 1
    python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$(_sc_dir)/logs/$1.out"
}

# sc_gen_tree DIR: SC_FILES small files over 60 folders, 4 MiB of random data, 2 MiB of
# compressible text, an empty file, a hard link pair, a symlink. Deterministic but the random
# files.
sc_gen_tree() {
    python3 - "$1" "$SC_FILES" <<'EOF'
import os, random, sys
root, nfiles = sys.argv[1], int(sys.argv[2])
r = random.Random(7)
for i in range(nfiles):
    d = os.path.join(root, "many", "d%02d" % (i % 60))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%05d.txt" % i), "w") as f:
        f.write("file %d %s\n" % (i, "x" * r.randrange(0, 300)))
os.makedirs(os.path.join(root, "bin"))
for i in range(4):
    with open(os.path.join(root, "bin", "r%d.bin" % i), "wb") as f:
        f.write(os.urandom((1 << 20) - i * 977))
with open(os.path.join(root, "log.txt"), "w") as f:
    n = 0
    while n < 2 << 20:
        line = "2026-11-22 12:%02d:%02d INFO request %d served in %d ms\n" % (
            n % 60, n % 59, n, r.randrange(1, 900))
        f.write(line)
        n += len(line)
open(os.path.join(root, "empty"), "w").close()
os.link(os.path.join(root, "bin", "r0.bin"), os.path.join(root, "bin", "r0-hardlink.bin"))
os.symlink("bin/r1.bin", os.path.join(root, "link-to-r1"))
EOF
}

# sc_same_tree A B: same content (diff -r, no dereference), same checksums, symlink targets and
# hard-link pair.
sc_same_tree() {
    local a=$1 b=$2
    if ! diff -r --no-dereference "$a" "$b" >"$SC_TMP/sc/diff.out" 2>&1; then
        echo "trees differ ($a vs $b):"
        head -n 10 "$SC_TMP/sc/diff.out"
        return 1
    fi
    (cd "$a" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$SC_TMP/sc/sum.a"
    (cd "$b" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$SC_TMP/sc/sum.b"
    if ! cmp -s "$SC_TMP/sc/sum.a" "$SC_TMP/sc/sum.b"; then
        echo "checksums differ:"
        diff "$SC_TMP/sc/sum.a" "$SC_TMP/sc/sum.b" | head -n 5
        return 1
    fi
    [[ -L "$b/link-to-r1" && "$(readlink "$b/link-to-r1")" == bin/r1.bin ]] ||
        { echo "symlink not restored as a symlink to bin/r1.bin"; return 1; }
    [[ "$(stat -c %i "$b/bin/r0.bin")" == "$(stat -c %i "$b/bin/r0-hardlink.bin")" ]] ||
        { echo "hard link not restored as a hard link"; return 1; }
}

sc_init_backup() {
    local d src n
    d=$(_sc_dir)
    src="$d/src"
    rm -rf "$d"
    mkdir -p "$d"
    sc_gen_tree "$src"
    n=$(find "$src" -type f | wc -l)
    echo "tree: $n files, $(du -sm "$src" | cut -f1) MiB"
    ((n >= SC_FILES)) || { echo "the generated tree has only $n files"; return 1; }
    cp -a "$src" "$d/orig" # the tree as the first snapshot saw it
    sc_ok init -r "$SC_REPO" init --kdf-log-n 10 || return 1
    sc_ok backup1 -r "$SC_REPO" backup "$src" || return 1
    [[ "$(sc_snapcount snaps1)" == 1 ]] || { echo "expected 1 snapshot"; return 1; }
    SC_B1=$($SC_STORED) || return 1
    echo "stored after the first backup: $SC_B1 bytes"
    # 4 MiB of random data cannot be stored in less
    ((SC_B1 > 4 * 1048576)) || { echo "the server holds only $SC_B1 bytes"; return 1; }
    [[ -n "$(find "$d/cache" -type f 2>/dev/null | head -n 1)" ]] ||
        { echo "no metadata cache in COFFER_CACHE_DIR ($d/cache)"; return 1; }
}

sc_second_backup() {
    local d src b2 grow
    d=$(_sc_dir)
    src="$d/src"
    head -c 1048576 /dev/urandom >"$src/bin/new.bin" # 1 MiB of new, incompressible data
    echo "changed" >>"$src/many/d07/f00007.txt"
    rm "$src/many/d08/f00008.txt"
    sc_ok backup2 -r "$SC_REPO" backup "$src" || return 1
    b2=$($SC_STORED) || return 1
    grow=$((b2 - SC_B1))
    echo "the second backup added $grow bytes for a 1 MiB change (repository: $SC_B1 -> $b2)"
    ((grow >= 1048576)) || { echo "grew by less than the new data"; return 1; }
    ((grow <= 1048576 + 768 * 1024)) ||
        { echo "grew by $grow bytes: more than the change plus metadata (dedup failed?)"; return 1; }
}

sc_snapshots() {
    [[ "$(sc_snapcount snaps2)" == 2 ]] || { echo "expected 2 snapshots"; return 1; }
    sc_ok snapshots -r "$SC_REPO" snapshots || return 1
    grep -q "$(_sc_dir)/src" "$(_sc_dir)/logs/snapshots.out" ||
        { echo "snapshots does not list the path"; sc_show snapshots; return 1; }
}

sc_restore_both() {
    local d first
    d=$(_sc_dir)
    sc_ok restore-latest -r "$SC_REPO" restore latest --verify --target "$d/r-latest" || return 1
    sc_same_tree "$d/src" "$d/r-latest$d/src" || return 1
    first=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(sorted(s, key=lambda x: x["time"])[0]["id"])' \
        "$d/logs/snaps2.out") || { echo "no snapshot id"; return 1; }
    sc_ok restore-first -r "$SC_REPO" restore "$first" --verify --target "$d/r-first" || return 1
    # the older snapshot holds the original tree, under the path it was taken from
    sc_same_tree "$d/orig" "$d/r-first$d/src"
}

sc_check_data() {
    sc_ok check1 -r "$SC_REPO" check --read-data
}

sc_forget_prune() {
    local d
    d=$(_sc_dir)
    sc_ok forget -r "$SC_REPO" forget --keep-last 1 --prune || return 1
    [[ "$(sc_snapcount snaps3)" == 1 ]] || { echo "expected 1 snapshot after forget"; return 1; }
    rm -rf "$d/r-latest" "$d/r-first"
    sc_ok restore-after -r "$SC_REPO" restore latest --verify --target "$d/r-after" || return 1
    sc_same_tree "$d/src" "$d/r-after$d/src" || return 1
    sc_ok check2 -r "$SC_REPO" check --read-data
}

# A backup reading stdin from a pipe this test holds open keeps its (shared) lock for as
# long as needed: prune (exclusive) is refused with exit 13; another backup is admitted.
sc_second_writer() {
    local d fifo pid rc=0 i
    d=$(_sc_dir)
    fifo="$d/live.fifo"
    mkfifo "$fifo"
    TMPDIR="$d/tmp" COFFER_CACHE_DIR="$d/cache" "$SC_COFFER" -r "$SC_REPO" backup --stdin \
        --stdin-name live.txt <"$fifo" >"$d/logs/live.out" 2>"$d/logs/live.err" &
    pid=$!
    exec 8>"$fifo"
    printf 'live data\n' >&8
    # wait until the live backup holds its lock: then prune must be refused
    for ((i = 0; i < 300; i++)); do
        [[ "$($SC_NLOCKS)" -ge 1 ]] && break
        sleep 0.1
    done
    rc=0
    sc_cf prune-live -r "$SC_REPO" prune || rc=$?
    if [[ $rc -ne 13 ]]; then
        echo "prune next to a live backup exited $rc, expected 13 (locked)"
        sc_show prune-live
        exec 8>&-
        wait "$pid"
        return 1
    fi
    grep -qi 'lock' "$d/logs/prune-live.err" || { echo "the refusal does not mention the lock"; sc_show prune-live; }
    # a second backup (a shared lock) is admitted alongside
    echo "second writer" >"$d/src/second.txt"
    sc_ok backup-alongside -r "$SC_REPO" backup "$d/src" || { exec 8>&-; wait "$pid"; return 1; }
    exec 8>&-
    wait "$pid" || { echo "the live backup failed:"; tail -n 5 "$d/logs/live.err"; return 1; }
    # both snapshots are there, nothing is damaged, and with the lock gone prune runs
    local n
    n=$(sc_snapcount snaps4) || return 1
    [[ "$n" == 3 ]] || { echo "expected 3 snapshots (1 + the live one + the one alongside), got $n"; return 1; }
    sc_ok prune-after -r "$SC_REPO" prune || return 1
    sc_ok check3 -r "$SC_REPO" check
}

# sc_tree_id LOG: the id of the newest snapshot of the generated tree (not the stdin one).
sc_tree_id() {
    sc_ok "$1" -r "$SC_REPO" --json snapshots || return 1
    python3 -c '
import json, sys
s = [x for x in json.load(open(sys.argv[1])) if sys.argv[2] in x.get("paths", [])]
print(sorted(s, key=lambda x: x["time"])[-1]["id"])' "$(_sc_dir)/logs/$1.out" "$(_sc_dir)/src"
}

# The cache also holds tree packs, named by their hash, which is checked on every read: a
# damaged one is ignored and replaced. What is in the repository is learnt by listing it, so
# a second host (its own cache) and the first see each other's snapshots and trees.
sc_cache_trees() {
    local d f n good=0 id
    d=$(_sc_dir)
    n=$(find "$d/cache" -path '*/packs/*' -type f | wc -l)
    ((n >= 1)) || { echo "no tree pack in the cache"; return 1; }
    while IFS= read -r f; do
        printf 'damaged' | dd of="$f" bs=1 seek=100 conv=notrunc status=none
    done < <(find "$d/cache" -path '*/packs/*' -type f)
    rm -rf "$d/r-trees"
    sc_ok trees-restore -r "$SC_REPO" restore latest --verify --target "$d/r-trees" || return 1
    # the packs that restore read were fetched again (others may still be damaged: they are
    # checked whenever they are read)
    while IFS= read -r f; do
        [[ "$(sha256sum "$f" | cut -c1-64)" == "$(basename "$f")" ]] && good=$((good + 1))
    done < <(find "$d/cache" -path '*/packs/*' -type f)
    ((good >= 1)) || { echo "no damaged tree pack was replaced in the cache"; return 1; }
    # another host, with a cache of its own, adds a snapshot
    mkdir -p "$d/other"
    echo "from the other host" >"$d/other/b.txt"
    SC_CACHE="$d/cache-other" sc_ok other-backup -r "$SC_REPO" backup --host other "$d/other" ||
        return 1
    id=$(sc_ok other-snaps -r "$SC_REPO" --json snapshots && python3 -c '
import json, sys
s = [x for x in json.load(open(sys.argv[1])) if x.get("hostname", x.get("host")) == "other"]
print(s[0]["id"] if len(s) == 1 else "")' "$d/logs/other-snaps.out") || return 1
    [[ -n "$id" ]] || { echo "the first host's cache does not see the other host's snapshot"; sc_show other-snaps; return 1; }
    rm -rf "$d/r-other"
    sc_ok other-restore -r "$SC_REPO" restore "$id" --verify --target "$d/r-other" || return 1
    cmp -s "$d/other/b.txt" "$d/r-other$d/other/b.txt" ||
        { echo "the other host's file was not restored"; return 1; }
    # and the other host sees the first host's snapshots
    id=$(sc_tree_id ids) || return 1
    SC_CACHE="$d/cache-other" sc_ok other-restore2 -r "$SC_REPO" restore "$id" --verify \
        --target "$d/r-other2" || return 1
    sc_same_tree "$d/src" "$d/r-other2$d/src"
}

sc_cache_deleted() {
    local d home id
    d=$(_sc_dir)
    [[ -n "$(find "$d/cache" -type f | head -n 1)" ]] || { echo "the cache is empty"; return 1; }
    rm -rf "$d/cache"
    rm -rf "$d/r-cache"
    id=$(sc_tree_id nocache-snap) || { echo "no snapshot of the tree"; return 1; }
    sc_ok nocache-restore -r "$SC_REPO" restore "$id" --verify --target "$d/r-cache" || return 1
    sc_same_tree "$d/src" "$d/r-cache$d/src" || return 1
    sc_ok nocache-check -r "$SC_REPO" check || return 1
    [[ -n "$(find "$d/cache" -type f 2>/dev/null | head -n 1)" ]] ||
        { echo "the cache was not rebuilt"; return 1; }
    # the default location, ~/.cache/coffer, the same way
    home="$d/home"
    mkdir -p "$home"
    HOME="$home" XDG_CACHE_HOME="" TMPDIR="$d/tmp" \
        env -u COFFER_CACHE_DIR -u XDG_CACHE_HOME "$SC_COFFER" -r "$SC_REPO" snapshots \
        >"$d/logs/home1.out" 2>&1 || { echo "snapshots with the default cache failed"; cat "$d/logs/home1.out"; return 1; }
    [[ -n "$(find "$home/.cache/coffer" -type f 2>/dev/null | head -n 1)" ]] ||
        { echo "nothing cached under \$HOME/.cache/coffer"; return 1; }
    rm -rf "$home/.cache/coffer"
    rm -rf "$d/r-home"
    HOME="$home" TMPDIR="$d/tmp" env -u COFFER_CACHE_DIR -u XDG_CACHE_HOME \
        "$SC_COFFER" -r "$SC_REPO" restore "$id" --verify --target "$d/r-home" \
        >"$d/logs/home2.out" 2>&1 || { echo "restore after deleting ~/.cache/coffer failed"; cat "$d/logs/home2.out"; return 1; }
    sc_same_tree "$d/src" "$d/r-home$d/src"
}

# sc_scan WHAT DIR...: no credential of SC_SECRETS in any file under the DIRs (outputs, the
# cache, temporary files). Prints each hit.
sc_scan() {
    local what=$1 s hits=0 f
    shift
    for s in "${SC_SECRETS[@]}"; do
        [[ ${#s} -ge 6 ]] || continue
        while IFS= read -r f; do
            echo "credential '${s:0:4}…' found in $f:"
            grep -aF -m 2 "$s" "$f" | cut -c1-200
            hits=$((hits + 1))
        done < <(grep -rlaF -- "$s" "$@" 2>/dev/null)
    done
    if [[ $hits -ne 0 ]]; then
        echo "$what: $hits leak(s)"
        return 1
    fi
    echo "$what: scanned $(find "$@" -type f 2>/dev/null | wc -l) files for ${#SC_SECRETS[@]} credentials"
}

sc_no_leak() {
    local d
    d=$(_sc_dir)
    sc_scan "scenario outputs, cache and temporary files" "$d/logs" "$d/cache" "$d/cache-other" \
        "$d/tmp" "$d/home"
}

# sc_scenario RUNNER: every step, in order, each as one case of RUNNER.
sc_scenario() {
    local run=$1
    $run "e2e: init and backup of a $SC_FILES-file tree (random, text, hard link, symlink)" sc_init_backup
    $run "e2e: second backup after changes grows the repository only by the change" sc_second_backup
    $run "e2e: snapshots lists both" sc_snapshots
    $run "e2e: restore --verify of both snapshots equals the trees they were taken of" sc_restore_both
    $run "e2e: check --read-data" sc_check_data
    $run "e2e: forget --keep-last 1 --prune, then restore --verify and check --read-data" sc_forget_prune
    $run "e2e: second writer: prune refused (exit 13) next to a live backup, backup admitted" sc_second_writer
    $run "e2e: damaged cached tree packs replaced; two hosts with their own caches see each other" sc_cache_trees
    $run "e2e: metadata cache deleted (COFFER_CACHE_DIR and ~/.cache/coffer): all still works" sc_cache_deleted
    $run "e2e: no credential in any output, cache or temporary file" sc_no_leak
}
