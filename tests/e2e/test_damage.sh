#!/usr/bin/env bash
# test_damage.sh - bad input and damaged repositories: wrong password, missing repository,
# flipped bits, truncated index, missing packs and trees, unwritable or non-empty targets,
# corrupted config and key files, init over an existing repository, bad command lines.
# Every case works on a fresh copy of one pristine repository.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC="$TMP/src"
PRISTINE="$TMP/pristine"

mkdir -p "$SRC/sub"
for i in 1 2 3 4; do rand_file "$SRC/f$i.bin" 20; done
rand_file "$SRC/sub/f5.bin" 20
printf 'small\n' >"$SRC/small.txt"
new_repo "$PRISTINE" --pack-size 4194304
if ! "$COFFER" --repo "$PRISTINE" -q backup "$SRC" >"$TMP/.b.out" 2>&1; then
    echo "cannot back up the test tree:" >&2
    cat "$TMP/.b.out" >&2
    exit 1
fi

# A map of the repository, made through coffer's own debugging output: which blobs each pack
# holds (offset, length, type), which blobs each file uses, and the snapshot's root tree.
python3 - "$COFFER" "$PRISTINE" >"$TMP/map.json" <<'EOF' || { echo "cannot map the repository" >&2; exit 1; }
import json, os, subprocess, sys
coffer, repo = sys.argv[1], sys.argv[2]
def cat(*a):
    return json.loads(subprocess.run([coffer, '--repo', repo, 'cat'] + list(a), check=True,
                                     capture_output=True).stdout)
snap = cat('snapshot', 'latest')
packs = {}
for d in sorted(os.listdir(os.path.join(repo, 'data'))):
    for p in sorted(os.listdir(os.path.join(repo, 'data', d))):
        packs[p] = {'path': 'data/%s/%s' % (d, p),
                    'size': os.path.getsize(os.path.join(repo, 'data', d, p)),
                    'blobs': cat('pack', p)['blobs']}
files = {}
def walk(tree, prefix):
    for n in cat('tree', tree):
        path = prefix + '/' + n['name']
        if n.get('subtree'):
            walk(n['subtree'], path)
        elif 'content' in n:
            files[path] = [c['blob'] for c in n['content'] if 'blob' in c]
walk(snap['tree'], '')
json.dump({'snapshot': snap['id'], 'tree': snap['tree'], 'packs': packs, 'files': files},
          sys.stdout, indent=1)
EOF

# mapq EXPR: evaluate a python expression over the map (m); lists print one item a line.
mapq() {
    python3 - "$TMP/map.json" "$1" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
def pack_of(blob):
    return [p for p, v in m['packs'].items() if any(b['id'] == blob for b in v['blobs'])]
def files_in_pack(pack):
    ids = {b['id'] for b in m['packs'][pack]['blobs']}
    return sorted(f for f, bl in m['files'].items() if ids & set(bl))
def data_packs():
    return sorted(p for p, v in m['packs'].items() if v['blobs'] and all(b['type'] == 0 for b in v['blobs']))
def blob_at(pack, off):
    for b in m['packs'][pack]['blobs']:
        if b['offset'] <= off < b['offset'] + b['length']:
            return b['id']
def files_with(blob):
    return sorted(f for f, bl in m['files'].items() if blob in bl)
v = eval(sys.argv[2])
if isinstance(v, (list, tuple)):
    for x in v:
        print(x)
else:
    print(v)
EOF
}

# fresh NAME: a copy of the pristine repository at $TMP/NAME; sets COFFER_REPO to it.
fresh() {
    rm -rf "${TMP:?}/$1"
    cp -a "$PRISTINE" "$TMP/$1"
    export COFFER_REPO="$TMP/$1"
}

# flip_byte FILE OFFSET: xor one byte of FILE in place.
flip_byte() {
    python3 - "$1" "$2" <<'EOF'
import sys
with open(sys.argv[1], 'r+b') as f:
    f.seek(int(sys.argv[2]))
    b = f.read(1)
    f.seek(int(sys.argv[2]))
    f.write(bytes([b[0] ^ 0x10]))
EOF
}

# A data pack whose middle byte belongs to exactly one file, and whose blobs belong to as few
# files as possible.
pick_pack() {
    mapq "sorted(data_packs(), key=lambda p: (len(files_with(blob_at(p, m['packs'][p]['size'] // 2))) != 1, len(files_in_pack(p)), p))[0]"
}

ALLFILES=$(mapq "sorted(m['files'])")

# ---------------------------------------------------------------------------------------------

case_wrong_password() {
    fresh wrongpw
    COFFER_PASSWORD=not-the-password expect_exit 11 cf snapshots || return 1
    output_has '[Pp]assword' "the wrong-password error does not mention the password"
    COFFER_PASSWORD=not-the-password expect_exit 11 cf restore latest --target "$TMP/r_wrongpw"
    check "a restore with the wrong password created the target" test ! -e "$TMP/r_wrongpw"
    # the right one still works afterwards
    expect_exit 0 cf snapshots
}

case_no_repo() {
    expect_exit 10 cf --repo /nonexistent snapshots || return 1
    output_has '/nonexistent' "the error does not name the repository"
    COFFER_REPO=/nonexistent/repo expect_exit 10 cf backup "$SRC/small.txt"
    check "backup into a missing repository created it" test ! -e /nonexistent/repo
    mkdir -p "$TMP/emptydir"
    expect_exit 10 cf --repo "$TMP/emptydir" snapshots
    expect_exit 10 cf --repo "$TMP/emptydir" restore latest --target "$TMP/r_norepo"
}

case_flipped_pack_bit() {
    fresh flip
    local pack size path blob victim
    pack=$(pick_pack)
    path=$(mapq "m['packs']['$pack']['path']")
    size=$(mapq "m['packs']['$pack']['size']")
    blob=$(mapq "blob_at('$pack', $size // 2)")
    victim=$(mapq "files_with('$blob')[0]")
    flip_byte "$COFFER_REPO/$path" $((size / 2))
    [[ "${E2E_DEBUG:-0}" == 1 ]] && echo "  flipped byte $((size / 2)) of $path: blob $blob of $victim" >&2

    # check without --read-data may pass (it does not read pack contents) but must not crash
    expect_exit "0|12" cf check
    expect_exit 12 cf check --read-data
    output_has "${pack:0:8}" "check --read-data does not name the damaged pack ${pack:0:8}"
    output_has "$victim" "check --read-data does not name the affected file $victim"

    # restore: everything not using the damaged blob comes back; the damaged file does not
    local t="$TMP/r_flip" f
    run cf restore latest --target "$t"
    if _crashed || [[ $RC -eq 0 ]]; then
        note "restore of a snapshot with a damaged blob exited $RC"
    fi
    output_has "$victim" "restore does not name the damaged file $victim"
    while IFS= read -r f; do
        [[ "$f" == "$victim" ]] && continue
        check "$f was not restored intact (it does not use the damaged blob)" cmp "$f" "$t$f"
    done <<<"$ALLFILES"
    if [[ -e "$t$victim" ]]; then
        note "the damaged file $victim was left in the target ($(stat -c %s "$t$victim") bytes)"
    fi
    local extra
    extra=$(cd "$t$SRC" && find . -type f | sed 's|^\./||' | grep -vxE 'f[1-4]\.bin|sub/f5\.bin|small\.txt')
    [[ -z "$extra" ]] || note "restore left unexpected files: $extra"
}

case_truncated_index() {
    fresh trunc
    local idx
    idx=$(ls "$COFFER_REPO/index" | head -n 1)
    local size
    size=$(stat -c %s "$COFFER_REPO/index/$idx")
    truncate -s $((size / 2)) "$COFFER_REPO/index/$idx"
    expect_exit 12 cf check || return 1
    output_has "${idx:0:8}" "check does not name the damaged index ${idx:0:8}"
    # other commands fail cleanly or work around it, without crashing
    expect_exit "0|12" cf snapshots
    expect_exit "0|12" cf restore latest --target "$TMP/r_trunc"
}

case_deleted_pack() {
    fresh delpack
    local pack path f
    pack=$(pick_pack)
    path=$(mapq "m['packs']['$pack']['path']")
    rm "$COFFER_REPO/$path"
    expect_exit 12 cf check || return 1
    output_has "${pack:0:8}" "check does not name the missing pack ${pack:0:8}"
    while IFS= read -r f; do
        output_has "$f" "check does not name the affected file $f"
    done < <(mapq "files_in_pack('$pack')")
    expect_exit 12 cf check --read-data
    local t="$TMP/r_delpack"
    run cf restore latest --target "$t"
    if _crashed || [[ $RC -eq 0 ]]; then
        note "restore with a missing pack exited $RC"
    fi
    local affected
    affected=$(mapq "files_in_pack('$pack')")
    while IFS= read -r f; do
        if grep -qxF -- "$f" <<<"$affected"; then
            check "$f uses the missing pack but was left in the target" test ! -e "$t$f"
        else
            check "$f does not use the missing pack but was not restored intact" cmp "$f" "$t$f"
        fi
    done <<<"$ALLFILES"
}

case_missing_tree() {
    fresh notree
    local tree tpack
    tree=$(mapq "m['tree']")
    tpack=$(mapq "pack_of('$tree')[0]")
    check "the root tree is stored with data blobs" \
        test "$(mapq "all(b['type'] == 1 for b in m['packs']['$tpack']['blobs'])")" = True
    rm "$COFFER_REPO/$(mapq "m['packs']['$tpack']['path']")"
    expect_exit 12 cf check || return 1
    output_has "${tree:0:8}|${tpack:0:8}" "check does not name the missing tree or its pack"
    expect_exit 12 cf check --read-data
    # every reader fails cleanly
    run cf ls latest
    { _crashed || [[ $RC -eq 0 ]]; } && note "ls of a snapshot without its tree exited $RC"
    run cf find '*.bin'
    _crashed && note "find with a missing tree crashed (exit $RC)"
    run cf dump latest "$SRC/small.txt"
    { _crashed || [[ $RC -eq 0 ]]; } && note "dump from a snapshot without its tree exited $RC"
    run cf restore latest --target "$TMP/r_notree"
    { _crashed || [[ $RC -eq 0 ]]; } && note "restore of a snapshot without its tree exited $RC"
    expect_exit 0 cf snapshots
    # a new backup still works (its trees are written again)
    expect_exit 0 cf backup "$SRC"
    return 0
}

case_flipped_tree_bit() {
    fresh fliptree
    local tree tpack off
    tree=$(mapq "m['tree']")
    tpack=$(mapq "pack_of('$tree')[0]")
    off=$(mapq "[b['offset'] + b['length'] // 2 for b in m['packs']['$tpack']['blobs'] if b['id'] == '$tree'][0]")
    flip_byte "$COFFER_REPO/$(mapq "m['packs']['$tpack']['path']")" "$off"
    expect_exit 12 cf check || return 1
    run cf ls latest
    { _crashed || [[ $RC -eq 0 ]]; } && note "ls of a snapshot with a damaged tree exited $RC"
    run cf restore latest --target "$TMP/r_fliptree"
    { _crashed || [[ $RC -eq 0 ]]; } && note "restore of a snapshot with a damaged tree exited $RC"
    return 0
}

case_corrupt_snapshot() {
    fresh badsnap
    local s
    s=$(ls "$COFFER_REPO/snapshots" | head -n 1)
    flip_byte "$COFFER_REPO/snapshots/$s" 40
    expect_exit 12 cf check || return 1
    output_has "${s:0:8}" "check does not name the damaged snapshot ${s:0:8}"
    run cf snapshots
    _crashed && note "snapshots crashed on a damaged snapshot file"
    run cf restore "${s:0:8}" --target "$TMP/r_badsnap"
    { _crashed || [[ $RC -eq 0 ]]; } && note "restore of a damaged snapshot exited $RC"
    return 0
}

# run_as_nobody CMD...: run a command as uid/gid 65534.
run_as_nobody() {
    setpriv --reuid=65534 --regid=65534 --clear-groups "$@"
}

case_target_no_permission() {
    fresh perm
    local locked="$TMP/locked"
    mkdir -p "$locked"
    if [[ $(id -u) -eq 0 ]]; then
        chown -R 65534:65534 "$COFFER_REPO"
        chmod 0755 "$locked"
        run run_as_nobody "$COFFER" restore latest --target "$locked"
        if _crashed || [[ $RC -eq 0 ]]; then
            note "restore into a directory it cannot write exited $RC"
        fi
        output_has "$locked" "the error does not name the target"
        output_has '[Pp]ermission|not writable' "the error does not say why (permission)"
        check "restore as nobody wrote into the locked target" test -z "$(ls -A "$locked")"
        run run_as_nobody "$COFFER" restore latest --target "$locked/sub/dir"
        if _crashed || [[ $RC -eq 0 ]]; then
            note "restore into an uncreatable target exited $RC"
        fi
        output_has '[Pp]ermission|not writable' "the error for an uncreatable target does not say why"
        # and the repository itself is fine for nobody
        chmod 0777 "$TMP/r_nobody_ok" 2>/dev/null || { mkdir "$TMP/r_nobody_ok" && chmod 0777 "$TMP/r_nobody_ok"; }
        run run_as_nobody "$COFFER" restore latest --target "$TMP/r_nobody_ok"
        check "restore as nobody into a writable target exited $RC" test "$RC" = 0
    else
        chmod 0500 "$locked"
        run cf restore latest --target "$locked"
        if _crashed || [[ $RC -eq 0 ]]; then
            note "restore into a read-only directory exited $RC"
        fi
        output_has '[Pp]ermission|not writable' "the error does not say why (permission)"
        chmod 0700 "$locked"
    fi
}

case_target_not_empty() {
    fresh nonempty
    local t="$TMP/r_nonempty"
    mkdir -p "$t$SRC"
    printf 'precious\n' >"$t$SRC/small.txt"
    printf 'unrelated\n' >"$t/unrelated"
    run cf restore latest --target "$t"
    if _crashed || [[ $RC -eq 0 ]]; then
        note "restore into a non-empty target without --overwrite exited $RC"
    fi
    check "a refused restore changed an existing file" grep -qx precious "$t$SRC/small.txt"
    check "a refused restore wrote files" test ! -e "$t$SRC/f1.bin"
    expect_exit 0 cf restore latest --target "$t" --overwrite || return 1
    check "--overwrite did not replace small.txt" cmp "$SRC/small.txt" "$t$SRC/small.txt"
    check "--overwrite did not restore f1.bin" cmp "$SRC/f1.bin" "$t$SRC/f1.bin"
    check "--overwrite removed an unrelated file" test -f "$t/unrelated"
    assert_same_tree "$SRC" "$t$SRC"
}

case_overwrite_symlinks() {
    # --overwrite replaces what is in the way; it never writes through a symlink in the target
    fresh owsym
    local t="$TMP/r_owsym"
    mkdir -p "$t$SRC" "$TMP/victimdir"
    printf 'victim\n' >"$TMP/victim"
    ln -s "$TMP/victim" "$t$SRC/small.txt"
    ln -s "$TMP/victimdir" "$t$SRC/sub"
    expect_exit 0 cf restore latest --target "$t" --overwrite
    check "restore --overwrite wrote through a symlink to a file outside the target" \
        grep -qx victim "$TMP/victim"
    check "restore --overwrite wrote through a symlinked directory outside the target" \
        test -z "$(ls -A "$TMP/victimdir")"
    check "the symlink in the way was not replaced by the file" \
        test -f "$t$SRC/small.txt" -a ! -L "$t$SRC/small.txt"
    check "the symlinked directory in the way was not replaced by a directory" \
        test -d "$t$SRC/sub" -a ! -L "$t$SRC/sub"
    assert_same_tree "$SRC" "$t$SRC"
}

case_overwrite_dir_in_the_way() {
    # a non-empty directory where the snapshot has a file: replacing it deletes a whole tree,
    # so refusing is acceptable, but then with a clear error, and the rest is restored
    fresh owdir
    local t="$TMP/r_owdir"
    mkdir -p "$t$SRC/f1.bin/inner"
    printf 'junk\n' >"$t$SRC/f1.bin/inner/junk"
    run cf restore latest --target "$t" --overwrite
    _crashed && { note "restore crashed (exit $RC)"; return 1; }
    if [[ -f "$t$SRC/f1.bin" ]]; then
        check "restore replaced the directory but exited $RC" test "$RC" = 0
        check "f1.bin replaced the directory with wrong content" cmp "$SRC/f1.bin" "$t$SRC/f1.bin"
    else
        check "restore left a directory in the way of f1.bin but exited 0" test "$RC" != 0
        output_has "f1.bin" "the error does not name f1.bin"
        check "the refused directory lost its content" test -f "$t$SRC/f1.bin/inner/junk"
    fi
    local f
    for f in f2.bin f3.bin f4.bin sub/f5.bin small.txt; do
        check "$f not restored next to the conflict" cmp "$SRC/$f" "$t$SRC/$f"
    done
}

case_corrupt_config() {
    fresh badconfig
    flip_byte "$COFFER_REPO/config" $(($(stat -c %s "$COFFER_REPO/config") / 2))
    expect_exit "12|10" cf snapshots || return 1
    output_has 'config' "the error does not mention the config"
    fresh garbageconfig
    printf 'this is not a coffer config\n' >"$COFFER_REPO/config"
    expect_exit "12|10" cf snapshots || return 1
    output_has 'config' "the error for a garbage config does not mention the config"
    fresh emptyconfig
    : >"$COFFER_REPO/config"
    expect_exit "12|10" cf check
    output_has 'config' "the error for an empty config does not mention the config"
    return 0
}

case_bad_key_files() {
    fresh badkeys
    : >"$COFFER_REPO/keys/0000000000000000000000000000000000000000000000000000000000000000"
    head -c 300 /dev/urandom >"$COFFER_REPO/keys/ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
    printf '{"not": "a key"}' >"$COFFER_REPO/keys/1111111111111111111111111111111111111111111111111111111111111111"
    expect_exit 0 cf snapshots || return 1
    expect_exit 0 cf restore latest:"$SRC/small.txt" --target "$TMP/r_badkeys" || return 1
    check "restore with garbage key files present restored wrong data" cmp "$SRC/small.txt" "$TMP/r_badkeys/small.txt"
    COFFER_PASSWORD=wrong expect_exit 11 cf snapshots
}

case_init_existing() {
    fresh initagain
    local before after
    before=$(cd "$COFFER_REPO" && find . -type f -exec sha256sum {} + | sort)
    run cf init $KDF
    if _crashed || [[ $RC -eq 0 ]]; then
        note "init on an existing repository exited $RC"
    fi
    output_has 'exist|already' "the error does not say the repository exists"
    COFFER_PASSWORD=another-password run cf init $KDF
    [[ $RC -eq 0 ]] && note "init with another password on an existing repository exited 0"
    after=$(cd "$COFFER_REPO" && find . -type f -exec sha256sum {} + | sort)
    check "init on an existing repository changed its files" test "$before" = "$after"
    expect_exit 0 cf check
}

case_usage() {
    fresh usage
    expect_exit 2 cf frobnicate
    expect_exit 2 cf --bogus-global snapshots
    expect_exit 2 cf backup --bogus-option "$SRC"
    expect_exit 2 cf restore latest
    expect_exit 2 cf restore latest --target
    expect_exit 2 cf backup
    expect_exit 2 cf backup --type sideways "$SRC"
    expect_exit 2 cf check --read-data-subset 0
    expect_exit 2 cf snapshots --no-such-flag
    expect_exit 2 cf ls
    expect_exit 2 cf init --pack-size lots
    expect_exit 2 cf
    # with --json every error is one JSON object, usage errors included
    expect_exit 2 cf --json frobnicate || return 1
    check "a usage error under --json is not JSON: $(cat "$ERR")" \
        python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); sys.exit(0 if d["exit_code"] == 2 and d["code"] == "INVAL" else 1)' "$ERR"
    return 0
}

case_read_data_subset() {
    fresh subset
    expect_exit 0 cf --json check --read-data-subset 30 || return 1
    local packs read
    packs=$(json_get "$OUT" "j['packs']")
    read=$(json_get "$OUT" "j['packs_read']")
    check "--read-data-subset 30 read $read of $packs packs" test "$read" -gt 0 -a "$read" -lt "$packs"
    expect_exit 0 cf --json check --read-data-subset 100% || return 1
    check "--read-data-subset 100% did not read every pack" test "$(json_get "$OUT" "j['packs_read']")" = "$packs"
    # a damaged pack is found by a full subset
    flip_byte "$COFFER_REPO/$(mapq "m['packs']['$(pick_pack)']['path']")" 1000
    expect_exit 12 cf check --read-data-subset 100
}

case_missing_source() {
    fresh nosource
    run cf backup "$TMP/does-not-exist"
    { _crashed || [[ $RC -eq 0 ]]; } && note "backup of a missing path exited $RC"
    output_has 'does-not-exist' "the error does not name the missing path"
    # an unreadable file inside a tree: the backup completes with exit 3
    if [[ $(id -u) -eq 0 ]]; then
        local src="$TMP/partly"
        mkdir -p "$src" && chmod 0755 "$src"
        printf 'ok\n' >"$src/readable"
        printf 'no\n' >"$src/unreadable" && chmod 0000 "$src/unreadable"
        chown -R 65534:65534 "$COFFER_REPO"
        run run_as_nobody "$COFFER" backup "$src"
        check "backup with an unreadable file exited $RC, not 3" test "$RC" = 3
        output_has 'unreadable' "the warning does not name the unreadable file"
    fi
    return 0
}

case_password_sources() {
    fresh pwsrc
    printf '%s\n' "$COFFER_PASSWORD" >"$TMP/pw.txt"
    printf 'wrong\n' >"$TMP/badpw.txt"
    local saved=$COFFER_PASSWORD
    unset COFFER_PASSWORD
    expect_exit 0 cf --password-file "$TMP/pw.txt" snapshots
    expect_exit 11 cf --password-file "$TMP/badpw.txt" snapshots
    expect_exit 0 cf --password-command "cat $TMP/pw.txt" snapshots
    expect_exit 11 cf --password-command "echo wrong" snapshots
    run cf --password-command "exit 3" snapshots
    { _crashed || [[ $RC -eq 0 || $RC -eq 11 ]]; } && note "a failing --password-command gave exit $RC"
    run cf --password-file "$TMP/no-such-file" snapshots
    { _crashed || [[ $RC -eq 0 ]]; } && note "a missing --password-file gave exit $RC"
    output_has 'no-such-file' "the error does not name the missing password file"
    # no password at all, no terminal: a clear error, not a hang
    run timeout 10 setsid "$COFFER" snapshots
    { _crashed || [[ $RC -eq 0 || $RC -eq 124 ]]; } && note "no password and no terminal gave exit $RC"
    run timeout 10 setsid "$COFFER" --json snapshots
    check "a missing password under --json is not a JSON error: $(cat "$ERR")" \
        python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); sys.exit(0 if d["exit_code"] == 2 and "password" in d["error"] and d["hint"] else 1)' "$ERR"
    run cf --json --password-file "$TMP/no-such-file" snapshots
    check "a missing password file under --json is not a JSON error: $(cat "$ERR")" \
        python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); sys.exit(0 if d["exit_code"] == 1 and "no-such-file" in d["error"] else 1)' "$ERR"
    export COFFER_PASSWORD=$saved
    return 0
}

case_repo_full() {
    local mnt="$TMP/fullfs"
    mount_tmpfs "$mnt" 24m || { SKIPPED="cannot mount a tmpfs here"; return 0; }
    local repo="$mnt/repo"
    new_repo "$repo"
    mkdir -p "$TMP/bigsrc"
    rand_file "$TMP/bigsrc/big.bin" 40
    printf 'tiny\n' >"$TMP/bigsrc/tiny.txt"
    expect_exit 14 cf --repo "$repo" backup "$TMP/bigsrc"
    output_has '[Ss]pace' "the error does not say the disk is full"
    check "a failed backup left a snapshot" test -z "$(ls -A "$repo/snapshots" 2>/dev/null)"
    check "a failed backup left its lock" test -z "$(ls -A "$repo/locks" 2>/dev/null)"
    expect_exit 0 cf --repo "$repo" check --read-data
    # with space to spare, a small backup works
    expect_exit 0 cf --repo "$repo" backup "$TMP/bigsrc/tiny.txt"
    umount "$mnt"
}

case_target_full() {
    local mnt="$TMP/fulltarget"
    mount_tmpfs "$mnt" 30m || { SKIPPED="cannot mount a tmpfs here"; return 0; }
    fresh tfull
    expect_exit 14 cf restore latest --target "$mnt"
    output_has '[Ss]pace' "the error does not say the disk is full"
    # whatever was written is complete: no truncated file that looks restored
    local f
    while IFS= read -r -d '' f; do
        check "a partly written file was left behind: ${f#$mnt}" cmp "${f#$mnt}" "$f"
    done < <(find "$mnt" -type f -print0)
    umount "$mnt"
}

run_case "wrong password: exit 11" case_wrong_password
run_case "password file and command" case_password_sources
run_case "missing repository: exit 10" case_no_repo
run_case "flipped bit in a data pack" case_flipped_pack_bit
run_case "truncated index file" case_truncated_index
run_case "deleted data pack" case_deleted_pack
run_case "snapshot whose tree is missing" case_missing_tree
run_case "flipped bit in a tree blob" case_flipped_tree_bit
run_case "damaged snapshot file" case_corrupt_snapshot
run_case "target without write permission" case_target_no_permission
run_case "non-empty target needs --overwrite" case_target_not_empty
run_case "--overwrite replaces symlinks, never writes through them" case_overwrite_symlinks
run_case "--overwrite with a directory in the way of a file" case_overwrite_dir_in_the_way
run_case "corrupted config file" case_corrupt_config
run_case "garbage key files next to a valid one" case_bad_key_files
run_case "init on an existing repository" case_init_existing
run_case "usage errors: exit 2" case_usage
run_case "repository disk full: exit 14" case_repo_full
run_case "restore target disk full: exit 14" case_target_full
run_case "check --read-data-subset" case_read_data_subset
run_case "missing and unreadable sources" case_missing_source
finish
