#!/usr/bin/env bash
# test_roundtrip.sh - back up a tree full of awkward files, restore it, and require the restored
# tree to be identical in content and metadata; stdin backups, --verify, a file growing during
# the backup, selective restore, excludes, ls/find and snapshot selection.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPO="$TMP/repo"
SRC="$TMP/src"
export COMPARE_NS="${COMPARE_NS:-1}"   # mtimes must come back to the nanosecond
new_repo "$REPO"
export COFFER_REPO="$REPO"

# ---------------------------------------------------------------------------------------------
# the awkward tree

XATTRS=1
make_tree() {
    local s=$SRC
    mkdir -p "$s"

    # empty and small files, various modes
    : >"$s/empty0"
    : >"$s/empty1"
    mkdir "$s/emptydir"
    printf 'hello\n' >"$s/hello.txt"
    printf 'secret\n' >"$s/private.txt" && chmod 0600 "$s/private.txt"
    printf '#!/bin/sh\necho hi\n' >"$s/run.sh" && chmod 0755 "$s/run.sh"
    printf 'ro\n' >"$s/readonly.txt" && chmod 0444 "$s/readonly.txt"
    printf 'suid\n' >"$s/setuid.bin" && chmod 4755 "$s/setuid.bin"
    head -c 300000 /dev/urandom >"$s/random.bin"

    # directories with special modes
    mkdir "$s/setgid" && chmod 2775 "$s/setgid" && printf 'x\n' >"$s/setgid/inside"
    mkdir "$s/sticky" && chmod 1777 "$s/sticky"
    mkdir "$s/rodir" && printf 'y\n' >"$s/rodir/inside" && chmod 0555 "$s/rodir"

    # ownership other than root's (only possible as root)
    if [[ $(id -u) -eq 0 ]]; then
        printf 'owned\n' >"$s/owned.txt" && chown 1234:5678 "$s/owned.txt"
        mkdir "$s/owneddir" && chown 4321:8765 "$s/owneddir"
    fi

    # a 3 GiB sparse file with a few MiB of data at two offsets
    truncate -s 3G "$s/sparse.img"
    dd if=/dev/urandom of="$s/sparse.img" bs=1M seek=100 count=2 conv=notrunc status=none
    dd if=/dev/urandom of="$s/sparse.img" bs=1M seek=2500 count=3 conv=notrunc status=none

    # hard links, within a directory and across directories; a second group
    mkdir "$s/dir1" "$s/dir2"
    printf 'linked content\n' >"$s/dir1/hl_a"
    ln "$s/dir1/hl_a" "$s/dir1/hl_b"
    ln "$s/dir1/hl_a" "$s/dir2/hl_c"
    head -c 100000 /dev/urandom >"$s/dir2/big_a"
    ln "$s/dir2/big_a" "$s/big_b"
    printf 'not linked\n' >"$s/dir1/plain"

    # symlinks: relative, absolute, dangling, to a directory
    ln -s ../dir1/hl_a "$s/dir2/rel_link"
    ln -s /etc/passwd "$s/abs_link"
    ln -s /nonexistent/nowhere "$s/dangling"
    ln -s dir1 "$s/dirlink"

    # a FIFO, a device node (root only)
    mkfifo "$s/fifo"
    if [[ $(id -u) -eq 0 ]]; then
        mknod "$s/nulldev" c 1 3
    fi

    # a file that is all hole, one whose data ends at the last byte, a mode-0000 file,
    # a long run of real zeros, a symlink with a very long target
    truncate -s 1G "$s/allhole.img"
    truncate -s 256M "$s/tailed.img"
    printf 'the end' | dd of="$s/tailed.img" bs=1 seek=$((256 * 1048576 - 7)) conv=notrunc status=none
    printf 'nothing\n' >"$s/mode0000" && chmod 0000 "$s/mode0000"
    head -c 5000000 /dev/zero >"$s/zeros.bin"
    ln -s "$(printf 'x/%.0s' {1..1500})target" "$s/longlink"

    # awkward names
    local long
    long=$(printf 'L%.0s' {1..255})
    printf 'long\n' >"$s/$long"
    mkdir "$s/$(printf 'D%.0s' {1..255})"
    printf 'long2\n' >"$s/$(printf 'D%.0s' {1..255})/$(printf 'f%.0s' {1..255})"
    printf 'bytes\n' >"$s/"$'\xff\xfe'
    mkdir "$s/"$'bad\xc3(dir' && printf 'z\n' >"$s/"$'bad\xc3(dir/'$'\x80\x81'
    printf 'space\n' >"$s/with space"
    printf 'newline\n' >"$s/"$'new\nline'
    printf 'tab\n' >"$s/"$'tab\tname'
    printf 'dash\n' >"$s/-dash"
    printf 'glob\n' >"$s/star*quest?[x]"
    printf 'utf8\n' >"$s/héllo wörld ☃"

    # deep nesting: 100 levels
    local d="$s/deep" i
    for i in $(seq 1 100); do d="$d/lvl$i"; done
    mkdir -p "$d"
    printf 'bottom\n' >"$d/bottom.txt"

    # extended attributes (skipped if the filesystem refuses user xattrs)
    if setfattr -n user.probe -v 1 "$s/hello.txt" 2>/dev/null; then
        setfattr -x user.probe "$s/hello.txt"
        setfattr -n user.k -v v "$s/hello.txt"
        setfattr -n user.multi -v "two words" "$s/hello.txt"
        setfattr -n user.bin -v 0x00ff10 "$s/random.bin"
        setfattr -n user.dir -v d "$s/dir1"
        setfattr -n user.big -v "$(head -c 3000 /dev/zero | tr '\0' a)" "$s/private.txt"
    else
        XATTRS=0
    fi

    # mtimes (files first, directories last so creating entries does not disturb them)
    touch -d '2001-02-03 04:05:06' "$s/hello.txt" "$s/empty0" "$s/dir1/hl_a"
    touch -d '1999-12-31 23:59:59.123456789' "$s/random.bin"
    touch -d '2038-01-19 03:14:08' "$s/run.sh"
    touch -d '1970-01-01 00:00:01' "$s/private.txt"
    touch -h -d '2010-10-10 10:10:10' "$s/abs_link" "$s/dangling"
    touch -d '2015-05-05 05:05:05' "$s/fifo"
    touch -d '2005-06-07 08:09:10' "$s/deep/lvl1" "$s/dir2" "$s/setgid" "$s/emptydir"
}

make_tree

# ---------------------------------------------------------------------------------------------
# cases

case_backup() {
    expect_exit 0 cf backup "$SRC" --tag first --host e2ehost --json || return 1
    SNAP1=$(json_get "$OUT" "j['snapshot_id']") || { note "no snapshot_id in --json summary"; return 1; }
    check "backup --json summary reports 0 errors" test "$(json_get "$OUT" "j['errors']")" = 0
}

case_restore_identical() {
    local t="$TMP/r_full"
    expect_exit 0 cf restore latest --target "$t" || return 1
    check "restored tree is missing at $t$SRC" test -d "$t$SRC" || return 1
    assert_same_tree "$SRC" "$t$SRC"
    # the parents of the backed-up path are recreated too
    check "parent directory of the backup path not restored" test -d "$t$TMP"
}

case_sparse() {
    local t="$TMP/r_full" f
    f="$t$SRC/sparse.img"
    check "restored sparse file missing" test -f "$f" || return 1
    check "sparse file content differs (cmp)" cmp "$SRC/sparse.img" "$f"
    check "sparse file size differs" test "$(stat -c %s "$f")" = "$(stat -c %s "$SRC/sparse.img")"
    local used
    used=$(du -k "$f" | cut -f1)
    # 5 MiB of data in 3 GiB: allow generous slack, but far below the size
    if [[ $used -gt $((64 * 1024)) ]]; then
        note "restored sparse file uses ${used} KiB on disk (source: $(du -k "$SRC/sparse.img" | cut -f1) KiB): holes not preserved"
    fi
}

case_xattrs() {
    local f="$TMP/r_full$SRC/hello.txt"
    check "xattr user.k not restored" test "$(getfattr --only-values -n user.k "$f" 2>/dev/null)" = v
    check "xattr on a directory not restored" \
        test "$(getfattr --only-values -n user.dir "$TMP/r_full$SRC/dir1" 2>/dev/null)" = d
}

case_hardlinks() {
    local t="$TMP/r_full$SRC"
    check "hard link across directories lost (dir1/hl_a, dir2/hl_c)" \
        test "$(stat -c %i "$t/dir1/hl_a")" = "$(stat -c %i "$t/dir2/hl_c")"
    check "hard link count of dir1/hl_a is not 3" test "$(stat -c %h "$t/dir1/hl_a")" = 3
}

case_verify() {
    local t="$TMP/r_verify"
    expect_exit 0 cf restore "$SNAP1" --target "$t" --verify || return 1
    assert_same_tree "$SRC" "$t$SRC"
}

case_stdin() {
    local f="$TMP/db.dump"
    head -c 20M /dev/urandom | tee "$f" | cf backup --stdin --stdin-name db.dump --tag stdin \
        >"$OUT" 2>"$ERR"
    RC=$?
    if [[ $RC -ne 0 ]]; then
        note "stdin backup exited $RC"$'\n'"$(_tail_output)"
        return 1
    fi
    check "stdin data was not read completely" test "$(stat -c %s "$f")" = $((20 * 1048576))
    # where did it land in the snapshot?
    expect_exit 0 cf ls latest || return 1
    local p
    p=$(grep -a 'db.dump$' "$OUT" | head -n 1)
    if [[ -z "$p" ]]; then
        note "ls of the stdin snapshot does not list db.dump"$'\n'"$(_tail_output)"
        return 1
    fi
    cf dump latest "$p" >"$TMP/dumped" 2>"$ERR"
    RC=$?
    check "dump of $p exited $RC" test $RC = 0
    check "dump of the stdin snapshot is not bit-identical" cmp "$f" "$TMP/dumped"
    local t="$TMP/r_stdin"
    expect_exit 0 cf restore latest --target "$t" || return 1
    check "restored stdin file is not bit-identical ($t$p)" cmp "$f" "$t$p"
}

GROW="$TMP/grow"
case_changing_file() {
    local repo="$TMP/repo_grow" i
    new_repo "$repo"
    mkdir -p "$GROW"
    for i in $(seq 1 10); do rand_file "$GROW/part$i.bin" 20; done
    head -c 1048576 /dev/urandom >"$GROW/part5.log"
    # a writer appending 4 KiB records in a loop while the backup runs
    bg python3 -c '
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
rec = os.urandom(4096)
while True:
    os.write(fd, rec)
    time.sleep(0.0005)
' "$GROW/part5.log"
    local writer=$BG_PID
    sleep 0.2
    expect_exit "0|3" cf --repo "$repo" backup "$GROW"
    local brc=$?
    kill "$writer" 2>/dev/null
    wait "$writer" 2>/dev/null
    [[ $brc -eq 0 ]] || return 1
    local t="$TMP/r_grow"
    expect_exit 0 cf --repo "$repo" restore latest --target "$t" || return 1
    for i in $(seq 1 10); do
        check "part$i.bin restored differently" cmp "$GROW/part$i.bin" "$t$GROW/part$i.bin"
    done
    local f="$t$GROW/part5.log"
    check "the growing file is missing from the restore" test -f "$f" || return 1
    local size final
    size=$(stat -c %s "$f")
    final=$(stat -c %s "$GROW/part5.log")
    if (((size - 1048576) % 4096 != 0 || size < 1048576 || size > final)); then
        note "restored size $size is not a size the file had (1 MiB + k*4096, <= $final)"
    elif ! cmp -s "$f" <(head -c "$size" "$GROW/part5.log"); then
        note "restored growing file is not a prefix of the file (torn read)"
    fi
}

case_churn() {
    # files and directories appear and vanish, and a file shrinks and grows, during the backup
    local src="$TMP/churn" repo="$TMP/repo_churn" i
    new_repo "$repo"
    mkdir -p "$src/c"
    for i in $(seq 1 12); do rand_file "$src/big$i.bin" 10; done
    rand_file "$src/c/shrinking" 8
    bg bash -c '
        cd "$1" || exit 1
        while :; do
            for i in $(seq 1 200); do echo "$i" >"f$i"; mkdir -p "d$i"; echo x >"d$i/y"; done
            head -c 4000000 /dev/urandom >shrinking
            rm -rf f* d*
            : >shrinking
        done' churner "$src/c"
    local churner=$BG_PID
    expect_exit "0|3" cf --repo "$repo" backup "$src"
    expect_exit "0|3" cf --repo "$repo" backup "$src"
    kill "$churner" 2>/dev/null
    wait "$churner" 2>/dev/null
    expect_exit 0 cf --repo "$repo" check --read-data
    local t="$TMP/r_churn"
    expect_exit 0 cf --repo "$repo" restore latest --target "$t" || return 1
    for i in $(seq 1 12); do
        check "big$i.bin restored differently" cmp "$src/big$i.bin" "$t$src/big$i.bin"
    done
}

case_subpath() {
    local t="$TMP/r_sub"
    expect_exit 0 cf restore "$SNAP1:$SRC/dir1" --target "$t" || return 1
    check "SNAP:SUBPATH restored the full path instead of the directory contents" \
        test ! -e "$t$SRC"
    check "SNAP:SUBPATH did not restore dir1/hl_a at the target root" test -f "$t/hl_a"
    check "SNAP:SUBPATH restored something outside dir1" test ! -e "$t/dir2" -a ! -e "$t/hello.txt"
    assert_same_tree "$SRC/dir1" "$t" --no-root-meta
}

case_subpath_hardlink() {
    # dir2/hl_c is linked to dir1/hl_a, which is outside the restored subtree
    local t="$TMP/r_sub2"
    expect_exit 0 cf restore "$SNAP1:$SRC/dir2" --target "$t" || return 1
    check "dir2/hl_c (hard link to a file outside the subtree) not restored" cmp "$SRC/dir2/hl_c" "$t/hl_c"
    check "dir2/big_a not restored" cmp "$SRC/dir2/big_a" "$t/big_a"
    # an include that selects only the second name of a hard-linked file
    local t2="$TMP/r_inc_hl"
    expect_exit 0 cf restore "$SNAP1" --target "$t2" --include hl_c || return 1
    check "--include hl_c did not restore dir2/hl_c" cmp "$SRC/dir2/hl_c" "$t2$SRC/dir2/hl_c"
    check "--include hl_c restored dir1/hl_a too" test ! -e "$t2$SRC/dir1/hl_a"
}

case_subpath_file() {
    local t="$TMP/r_subfile"
    expect_exit 0 cf restore "$SNAP1:$SRC/random.bin" --target "$t" || return 1
    check "SNAP:FILE did not restore the file into the target" cmp "$SRC/random.bin" "$t/random.bin"
}

case_include() {
    local t="$TMP/r_inc"
    expect_exit 0 cf restore "$SNAP1" --target "$t" --include '*.txt' || return 1
    check "--include '*.txt' missed hello.txt" cmp "$SRC/hello.txt" "$t$SRC/hello.txt"
    check "--include '*.txt' missed deep/.../bottom.txt" test -f "$t$SRC/deep/lvl1/lvl2/lvl3/lvl4/lvl5/lvl6/lvl7/lvl8/lvl9/lvl10/lvl11/lvl12/lvl13/lvl14/lvl15/lvl16/lvl17/lvl18/lvl19/lvl20/lvl21/lvl22/lvl23/lvl24/lvl25/lvl26/lvl27/lvl28/lvl29/lvl30/lvl31/lvl32/lvl33/lvl34/lvl35/lvl36/lvl37/lvl38/lvl39/lvl40/lvl41/lvl42/lvl43/lvl44/lvl45/lvl46/lvl47/lvl48/lvl49/lvl50/lvl51/lvl52/lvl53/lvl54/lvl55/lvl56/lvl57/lvl58/lvl59/lvl60/lvl61/lvl62/lvl63/lvl64/lvl65/lvl66/lvl67/lvl68/lvl69/lvl70/lvl71/lvl72/lvl73/lvl74/lvl75/lvl76/lvl77/lvl78/lvl79/lvl80/lvl81/lvl82/lvl83/lvl84/lvl85/lvl86/lvl87/lvl88/lvl89/lvl90/lvl91/lvl92/lvl93/lvl94/lvl95/lvl96/lvl97/lvl98/lvl99/lvl100/bottom.txt"
    check "--include '*.txt' restored random.bin" test ! -e "$t$SRC/random.bin"
    check "--include '*.txt' restored sparse.img" test ! -e "$t$SRC/sparse.img"
    check "--include '*.txt' restored dir1 (no .txt inside)" test ! -e "$t$SRC/dir1"
    # an absolute path includes everything below it
    local t2="$TMP/r_inc2"
    expect_exit 0 cf restore "$SNAP1" --target "$t2" --include "$SRC/dir2" || return 1
    check "--include DIR did not restore dir2/big_a" cmp "$SRC/dir2/big_a" "$t2$SRC/dir2/big_a"
    check "--include DIR restored dir1" test ! -e "$t2$SRC/dir1"
}

case_exclude() {
    local t="$TMP/r_exc"
    expect_exit 0 cf restore "$SNAP1" --target "$t" --exclude '*.img' --exclude "$SRC/deep" || return 1
    check "--exclude '*.img' restored sparse.img" test ! -e "$t$SRC/sparse.img"
    check "--exclude DIR restored deep/" test ! -e "$t$SRC/deep"
    check "--exclude dropped hello.txt" cmp "$SRC/hello.txt" "$t$SRC/hello.txt"
    check "--exclude dropped dir1/hl_b" cmp "$SRC/dir1/hl_b" "$t$SRC/dir1/hl_b"
}

case_backup_excludes() {
    local repo="$TMP/repo_ex" src="$TMP/exsrc"
    new_repo "$repo"
    mkdir -p "$src/keep" "$src/cache" "$src/logs"
    printf 'k\n' >"$src/keep/a.txt"
    printf 'tmp\n' >"$src/keep/b.tmp"
    printf 'c\n' >"$src/cache/c.txt"
    printf 'l\n' >"$src/logs/d.log"
    printf 'o\n' >"$src/other.bak"
    printf '# comment line\n\n*.bak\n%s/logs\n' "$src" >"$TMP/excludes.txt"
    expect_exit 0 cf --repo "$repo" backup "$src" --exclude '*.tmp' --exclude "$src/cache" \
        --exclude-file "$TMP/excludes.txt" || return 1
    expect_exit 0 cf --repo "$repo" ls latest || return 1
    check "ls does not show the kept file" grep -aqx "$src/keep/a.txt" "$OUT"
    check "--exclude '*.tmp' did not exclude keep/b.tmp" bash -c "! grep -aq 'b.tmp' '$OUT'"
    check "--exclude DIR did not exclude cache/" bash -c "! grep -aq '/cache' '$OUT'"
    check "--exclude-file '*.bak' did not exclude other.bak" bash -c "! grep -aq 'other.bak' '$OUT'"
    check "--exclude-file DIR did not exclude logs/" bash -c "! grep -aq '/logs' '$OUT'"
    local t="$TMP/r_ex"
    expect_exit 0 cf --repo "$repo" restore latest --target "$t" || return 1
    check "excluded files came back on restore" \
        test ! -e "$t$src/keep/b.tmp" -a ! -e "$t$src/cache" -a ! -e "$t$src/other.bak" -a ! -e "$t$src/logs"
    check "kept file not restored" cmp "$src/keep/a.txt" "$t$src/keep/a.txt"
}

case_paths() {
    local repo="$TMP/repo_paths"
    new_repo "$repo"
    mkdir -p "$TMP/p1/x" "$TMP/p2"
    printf 'one\n' >"$TMP/p1/x/one"
    printf 'two\n' >"$TMP/p2/two"
    printf 'three\n' >"$TMP/p3file"
    # several paths, one of them relative, one with a trailing slash, one a plain file
    (cd "$TMP" && "$COFFER" --repo "$repo" backup p1 "$TMP/p2/" "$TMP/p3file") >"$OUT" 2>"$ERR"
    RC=$?
    check "backup of several paths exited $RC" test $RC = 0 || { note "$(_tail_output)"; return 1; }
    expect_exit 0 cf --repo "$repo" snapshots --json || return 1
    local paths
    paths=$(json_get "$OUT" "sorted(j[0]['paths'])")
    check "snapshot paths are $paths, not the three absolute paths" \
        test "$paths" = "[\"$TMP/p1\", \"$TMP/p2\", \"$TMP/p3file\"]"
    local t="$TMP/r_paths"
    expect_exit 0 cf --repo "$repo" restore latest --target "$t" || return 1
    check "relative path p1 not restored under its absolute path" cmp "$TMP/p1/x/one" "$t$TMP/p1/x/one"
    check "p2/ not restored" cmp "$TMP/p2/two" "$t$TMP/p2/two"
    check "a plain-file path not restored" cmp "$TMP/p3file" "$t$TMP/p3file"
    # errors for paths that are not in the snapshot or not files
    run cf --repo "$repo" restore "latest:$TMP/nope" --target "$TMP/r_nope"
    { _crashed || [[ $RC -eq 0 ]]; } && note "restore of a missing subpath exited $RC"
    output_has "$TMP/nope" "the error does not name the missing subpath"
    run cf --repo "$repo" dump latest "$TMP/p1"
    { _crashed || [[ $RC -eq 0 ]]; } && note "dump of a directory exited $RC"
    run cf --repo "$repo" dump latest "$TMP/p1/x/nope"
    { _crashed || [[ $RC -eq 0 ]]; } && note "dump of a missing file exited $RC"
    printf 'x' >"$TMP/a-file"
    run cf --repo "$repo" restore latest --target "$TMP/a-file"
    { _crashed || [[ $RC -eq 0 ]]; } && note "restore into a target that is a file exited $RC"
    return 0
}

case_one_file_system() {
    local src="$TMP/ofs"
    mkdir -p "$src/mnt"
    printf 'on the root fs\n' >"$src/here.txt"
    mount_tmpfs "$src/mnt" 4m || { SKIPPED="cannot mount a tmpfs here"; return 0; }
    printf 'on another fs\n' >"$src/mnt/there.txt"
    local repo="$TMP/repo_ofs"
    new_repo "$repo"
    expect_exit 0 cf --repo "$repo" backup --one-file-system "$src" || { umount "$src/mnt"; return 1; }
    expect_exit 0 cf --repo "$repo" ls latest
    check "--one-file-system dropped a file on the same filesystem" grep -qxF "$src/here.txt" "$OUT"
    check "--one-file-system crossed into a mounted filesystem" bash -c "! grep -qF 'there.txt' '$OUT'"
    # without the option, the mount is included
    expect_exit 0 cf --repo "$repo" backup "$src"
    expect_exit 0 cf --repo "$repo" ls latest
    check "without --one-file-system the mounted filesystem is missing" grep -qxF "$src/mnt/there.txt" "$OUT"
    umount "$src/mnt"
}

case_ls() {
    expect_exit 0 cf ls "$SNAP1" || return 1
    local n
    for n in "$SRC/hello.txt" "$SRC/dir2/hl_c" "$SRC/sparse.img" "$SRC/fifo" "$SRC/with space" \
        "$SRC/dir1" "$SRC/$(printf 'L%.0s' {1..255})"; do
        check "ls does not list '$n'" grep -aqxF -- "$n" "$OUT"
    done
    check "ls does not list the non-UTF-8 name" grep -aqF -- "$SRC/"$'\xff\xfe' "$OUT"
    check "ls does not list the newline name" grep -aqF -- "$SRC/new" "$OUT"
    # a path argument lists that directory
    expect_exit 0 cf ls "$SNAP1" "$SRC/dir1" || return 1
    check "ls SNAP DIR does not list dir1/hl_b" grep -aqF -- "$SRC/dir1/hl_b" "$OUT"
    check "ls SNAP DIR lists entries outside dir1" bash -c "! grep -aqF -- '$SRC/dir2' '$OUT'"
    # long listing shows symlink targets
    expect_exit 0 cf ls -v "$SNAP1" "$SRC" || return 1
    check "ls -v does not show the symlink target" grep -aqF -- "abs_link -> /etc/passwd" "$OUT"
}

case_find() {
    expect_exit 0 cf find 'hl_*' || return 1
    check "find 'hl_*' misses dir2/hl_c" grep -aqF -- "$SRC/dir2/hl_c" "$OUT"
    check "find 'hl_*' misses dir1/hl_a" grep -aqF -- "$SRC/dir1/hl_a" "$OUT"
    check "find 'hl_*' matched hello.txt" bash -c "! grep -aqF -- 'hello.txt' '$OUT'"
    check "find output lacks the snapshot id" grep -aqF -- "${SNAP1:0:8}" "$OUT"
    expect_exit 0 cf find 'bottom.txt' --snapshot "${SNAP1:0:8}" || return 1
    check "find --snapshot misses deep/.../bottom.txt" grep -aqF -- "/lvl100/bottom.txt" "$OUT"
    expect_exit 0 cf find "$SRC/dir1/*" --newest 1 || return 1
    # the newest snapshot is the stdin one: nothing under $SRC
    check "find --newest 1 searched older snapshots" bash -c "! grep -aqF -- '$SRC/dir1/hl_a' '$OUT'"
    expect_exit 0 cf find "$SRC/dir1/*" --newest 3 || return 1
    check "find with an absolute pattern misses dir1/hl_a" grep -aqF -- "$SRC/dir1/hl_a" "$OUT"
}

case_snapshots_json() {
    expect_exit 0 cf snapshots --json || return 1
    python3 - "$OUT" "$SRC" <<'EOF' >"$TMP/.py.out" 2>&1 || { note "snapshots --json: $(cat "$TMP/.py.out")"; return 1; }
import json, sys
snaps = json.load(open(sys.argv[1]))
assert isinstance(snaps, list) and len(snaps) >= 2, 'expected a list of >= 2 snapshots'
for s in snaps:
    for k in ('id', 'time', 'host', 'paths', 'tags'):
        assert k in s, 'snapshot lacks %r: %r' % (k, s)
    assert len(s['id']) == 64, 'id is not 64 hex digits: %r' % s['id']
first = [s for s in snaps if sys.argv[2] in s['paths']]
assert first, 'no snapshot with path %s' % sys.argv[2]
assert first[0]['host'] == 'e2ehost', 'host is %r, not e2ehost' % first[0]['host']
assert 'first' in first[0]['tags'], 'tags are %r' % first[0]['tags']
EOF
    expect_exit 0 cf snapshots --json --tag first || return 1
    check "snapshots --tag first does not return exactly the tagged snapshot" \
        test "$(json_get "$OUT" "len(j)")" = 1
    expect_exit 0 cf snapshots --json --host e2ehost || return 1
    check "snapshots --host e2ehost does not return exactly one snapshot" test "$(json_get "$OUT" "len(j)")" = 1
    expect_exit 0 cf snapshots --json --path "$SRC" || return 1
    check "snapshots --path does not return exactly one snapshot" test "$(json_get "$OUT" "len(j)")" = 1
    expect_exit 0 cf snapshots --json --host no-such-host || return 1
    check "snapshots --host no-such-host is not empty" test "$(json_get "$OUT" "len(j)")" = 0
    expect_exit 0 cf snapshots || return 1
    check "snapshots table lacks the short id" grep -aqF "${SNAP1:0:8}" "$OUT"
}

case_snapshot_ids() {
    expect_exit 0 cf cat snapshot latest || return 1
    local latest
    latest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$OUT") ||
        { note "cat snapshot latest is not JSON"; return 1; }
    check "latest is the first snapshot, not the newest" test "$latest" != "$SNAP1"
    expect_exit 0 cf cat snapshot "${SNAP1:0:8}" || return 1
    check "an 8-char id does not resolve to its snapshot" grep -aqF "$SNAP1" "$OUT"
    local t="$TMP/r_short"
    expect_exit 0 cf restore "${SNAP1:0:8}:$SRC/dir1" --target "$t" || return 1
    check "restore by 8-char id restored wrong data" cmp "$SRC/dir1/plain" "$t/plain"
    # latest of one host
    local t2="$TMP/r_host"
    expect_exit 0 cf restore latest --host e2ehost --target "$t2" || return 1
    check "restore latest --host e2ehost did not pick that host's snapshot" cmp "$SRC/hello.txt" "$t2$SRC/hello.txt"
    expect_exit 0 cf ls latest --host e2ehost "$SRC/dir1"
    check "ls latest --host e2ehost does not list dir1/plain" grep -qxF "$SRC/dir1/plain" "$OUT"
    run cf restore deadbeef --target "$TMP/r_none"
    if _crashed || [[ $RC -eq 0 ]]; then
        note "restore of an unknown snapshot id exited $RC"
    fi
    output_has 'deadbeef' "the error for an unknown snapshot id does not name it"
}

run_case "backup of an awkward tree" case_backup
run_case "restore reproduces content and metadata" case_restore_identical
run_case "sparse 3 GiB file: identical and still sparse" case_sparse
if [[ $XATTRS -eq 1 ]]; then
    run_case "extended attributes restored" case_xattrs
else
    skip "extended attributes restored" "filesystem refuses user xattrs"
fi
run_case "hard links restored as links" case_hardlinks
run_case "restore --verify" case_verify
run_case "stdin backup dumps and restores bit-identical" case_stdin
run_case "file growing during backup" case_changing_file
run_case "files appearing and vanishing during backup" case_churn
run_case "restore SNAP:SUBPATH" case_subpath
run_case "restore SNAP:SUBPATH with hard links leaving the subtree" case_subpath_hardlink
run_case "restore SNAP:FILE" case_subpath_file
run_case "restore --include" case_include
run_case "restore --exclude" case_exclude
run_case "backup --exclude and --exclude-file" case_backup_excludes
run_case "several, relative and file paths; bad paths" case_paths
run_case "backup --one-file-system" case_one_file_system
run_case "ls lists names" case_ls
run_case "find finds names" case_find
run_case "snapshots --json and filters" case_snapshots_json
run_case "latest and abbreviated ids" case_snapshot_ids
finish
