#!/usr/bin/env bash
# test_dedup.sh - deduplication and backup types: unchanged data adds almost nothing, equal
# content is stored once, a small insertion re-stores only the chunks around it, --type full
# re-reads but does not re-store, --type differential chains to the latest full snapshot.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KiB=1024
MiB=1048576

# a 100 MiB tree: 40 random files of 2.5 MiB in 4 directories, plus some small files
SRC="$TMP/src"
NFILES=0
make_tree() {
    local d i
    for d in a b c d; do
        mkdir -p "$SRC/$d"
        for i in $(seq 1 10); do
            head -c $((5 * MiB / 2)) /dev/urandom >"$SRC/$d/f$i.bin"
            NFILES=$((NFILES + 1))
        done
        for i in $(seq 1 5); do
            printf 'small %s %s\n' "$d" "$i" >"$SRC/$d/s$i.txt"
            NFILES=$((NFILES + 1))
        done
    done
}
make_tree

REPO="$TMP/repo"
new_repo "$REPO"
export COFFER_REPO="$REPO"

# backup_json ARGS...: cf --json backup ARGS; the summary is the last line of $OUT.
backup_json() {
    expect_exit 0 cf --json backup "$@"
}

summary() {
    json_get "$OUT" "j['$1']"
}

case_unchanged() {
    backup_json "$SRC" || return 1
    FIRST=$(summary snapshot_id)
    check "first backup: files_new is not $NFILES" test "$(summary files_new)" = "$NFILES"
    local before after
    before=$(repo_bytes "$REPO")
    check "first backup stored less than the data (${before} bytes)" test "$before" -gt $((100 * MiB))
    backup_json "$SRC" || return 1
    after=$(repo_bytes "$REPO")
    if ((after - before >= 64 * KiB)); then
        note "second backup of unchanged data grew the repository by $((after - before)) bytes (limit 64 KiB)"
    fi
    check "files_unchanged is $(summary files_unchanged), not $NFILES" \
        test "$(summary files_unchanged)" = "$NFILES"
    check "bytes_read is $(summary bytes_read), not 0" test "$(summary bytes_read)" = 0
    check "files_new/changed are not 0" test "$(summary files_new)$(summary files_changed)" = 00
    expect_exit 0 cf cat snapshot latest || return 1
    check "the unchanged backup's parent is not the first snapshot" \
        test "$(json_get "$OUT" "j.get('parent')")" = "$FIRST"
}

case_same_content() {
    local repo="$TMP/repo_twins" src="$TMP/twins"
    new_repo "$repo"
    mkdir -p "$src/x" "$src/y"
    rand_file "$src/x/one.bin" 50
    cp "$src/x/one.bin" "$src/y/two.bin"
    local before after
    before=$(repo_bytes "$repo")
    expect_exit 0 cf --repo "$repo" --json backup "$src" || return 1
    after=$(repo_bytes "$repo")
    local grew=$((after - before))
    if ((grew > 55 * MiB)); then
        note "50 MiB stored under two names grew the repository by $grew bytes (expected about 50 MiB)"
    elif ((grew < 50 * MiB)); then
        note "50 MiB of random data grew the repository by only $grew bytes"
    fi
    check "bytes_added is $(summary bytes_added), more than 55 MiB" test "$(summary bytes_added)" -le $((55 * MiB))
    # both names restore
    local t="$TMP/r_twins"
    expect_exit 0 cf --repo "$repo" restore latest --target "$t" || return 1
    check "x/one.bin restored differently" cmp "$src/x/one.bin" "$t$src/x/one.bin"
    check "y/two.bin restored differently" cmp "$src/y/two.bin" "$t$src/y/two.bin"
}

case_insert() {
    local repo="$TMP/repo_insert" src="$TMP/ins"
    new_repo "$repo"
    mkdir -p "$src"
    rand_file "$src/big.bin" 64
    expect_exit 0 cf --repo "$repo" backup "$src" || return 1
    local before after
    before=$(repo_bytes "$repo")
    python3 - "$src/big.bin" <<'EOF'
import os, sys
p = sys.argv[1]
data = open(p, 'rb').read()
mid = len(data) // 2 + 12345
open(p, 'wb').write(data[:mid] + os.urandom(100) + data[mid:])
EOF
    expect_exit 0 cf --repo "$repo" --json backup "$src" || return 1
    after=$(repo_bytes "$repo")
    if ((after - before >= 10 * MiB)); then
        note "inserting 100 bytes into a 64 MiB file grew the repository by $((after - before)) bytes (limit 10 MiB)"
    fi
    check "the edited file is not reported as changed" test "$(summary files_changed)" = 1
    local t="$TMP/r_ins"
    expect_exit 0 cf --repo "$repo" restore latest --target "$t" || return 1
    check "edited file restored differently" cmp "$src/big.bin" "$t$src/big.bin"
}

case_full() {
    local before after
    before=$(repo_bytes "$REPO")
    backup_json --type full "$SRC" || return 1
    FULL=$(summary snapshot_id)
    after=$(repo_bytes "$REPO")
    local total read
    total=$(summary bytes_total)
    read=$(summary bytes_read)
    check "--type full: bytes_read $read != bytes_total $total" test "$read" = "$total"
    check "--type full: bytes_total $total is not the size of the tree" \
        test "$total" = "$(find "$SRC" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')"
    if ((after - before >= 64 * KiB)); then
        note "--type full of unchanged data grew the repository by $((after - before)) bytes (limit 64 KiB)"
    fi
    expect_exit 0 cf cat snapshot latest || return 1
    check "--type full snapshot is not marked full" test "$(json_get "$OUT" "j['type']")" = full
    check "--type full snapshot has a parent" test "$(json_get "$OUT" "j.get('parent')")" = None
}

case_differential() {
    [[ -n "${FULL:-}" ]] || { note "needs the --type full snapshot"; return 1; }
    # an incremental after the full one, then a differential: its parent must be the full one
    printf 'changed\n' >>"$SRC/a/s1.txt"
    backup_json "$SRC" || return 1
    local incr
    incr=$(summary snapshot_id)
    expect_exit 0 cf cat snapshot latest || return 1
    check "incremental's parent is not the previous snapshot" test "$(json_get "$OUT" "j.get('parent')")" = "$FULL"
    check "incremental snapshot is not marked incremental" test "$(json_get "$OUT" "j['type']")" = incremental
    printf 'changed again\n' >>"$SRC/b/s2.txt"
    backup_json --type differential "$SRC" || return 1
    local diff
    diff=$(summary snapshot_id)
    check "differential: files_changed is $(summary files_changed), not 2 (changes since the full)" \
        test "$(summary files_changed)" = 2
    check "differential: bytes_read is $(summary bytes_read), more than the two small files" \
        test "$(summary bytes_read)" -lt 4096
    expect_exit 0 cf cat snapshot latest || return 1
    local parent
    parent=$(json_get "$OUT" "j.get('parent')")
    check "differential's parent is $parent, not the latest full snapshot $FULL" test "$parent" = "$FULL"
    check "differential snapshot is not marked differential" \
        test "$(json_get "$OUT" "j['type']")" = differential
    check "differential snapshot id differs from the one reported" test "$(json_get "$OUT" "j['id']")" = "$diff"
    # and it restores the current tree
    local t="$TMP/r_diff"
    expect_exit 0 cf restore "${diff:0:8}" --target "$t" || return 1
    assert_same_tree "$SRC" "$t$SRC"
    : "$incr"
}

case_stats() {
    expect_exit 0 cf --json stats || return 1
    local raw restore
    raw=$(json_get "$OUT" "j['raw_bytes']")
    restore=$(json_get "$OUT" "j['restore_size']")
    check "stats: unique raw bytes $raw exceed the tree size" test "$raw" -lt $((105 * MiB))
    check "stats: restore size $restore is below 4 snapshots of 100 MiB" test "$restore" -gt $((400 * MiB))
    check "stats: $(json_get "$OUT" "j['snapshots']") snapshots, expected 5" \
        test "$(json_get "$OUT" "j['snapshots']")" = 5
}

case_changes_detected() {
    local repo="$TMP/repo_changes" src="$TMP/chg"
    new_repo "$repo"
    mkdir -p "$src/d" "$src/gone" "$src/becomes_dir"
    rm -r "$src/becomes_dir"
    printf 'AAAAAAAA\n' >"$src/same_size_same_mtime"
    printf 'to be deleted\n' >"$src/gone/file"
    printf 'mode change\n' >"$src/chmod_me" && chmod 0644 "$src/chmod_me"
    printf 'plain\n' >"$src/becomes_dir"
    printf 'link target A\n' >"$src/d/t"
    ln -s t "$src/d/link"
    mkdir -p "$src/n1/n2/n3"
    printf 'nested one\n' >"$src/n1/n2/n3/content"
    printf 'nested two\n' >"$src/n1/n2/n3/meta"
    touch -d '2020-01-01 00:00:00' "$src/same_size_same_mtime"
    expect_exit 0 cf --repo "$repo" backup "$src" || return 1
    # changes deep inside directories whose own mtimes do not change
    local dm
    dm=$(stat -c %y "$src/n1/n2/n3")
    printf 'nested 1!\n' >"$src/n1/n2/n3/content"
    chmod 0640 "$src/n1/n2/n3/meta"
    chown 123:456 "$src/n1/n2/n3/meta" 2>/dev/null
    setfattr -n user.added -v later "$src/n1/n2/n3/meta" 2>/dev/null
    touch -d "$dm" "$src/n1/n2/n3"
    # content change that keeps size and mtime (only ctime tells)
    printf 'BBBBBBBB\n' >"$src/same_size_same_mtime"
    touch -d '2020-01-01 00:00:00' "$src/same_size_same_mtime"
    rm -r "$src/gone"
    chmod 0600 "$src/chmod_me"
    rm "$src/becomes_dir" && mkdir "$src/becomes_dir" && printf 'inside\n' >"$src/becomes_dir/f"
    ln -sfn elsewhere "$src/d/link"
    printf 'new file\n' >"$src/d/new"
    expect_exit 0 cf --repo "$repo" --json backup "$src" || return 1
    local t="$TMP/r_changes"
    expect_exit 0 cf --repo "$repo" restore latest --target "$t" || return 1
    assert_same_tree "$src" "$t$src"
    check "a same-size, same-mtime change was missed" grep -qx BBBBBBBB "$t$src/same_size_same_mtime"
    check "a deleted directory came back" test ! -e "$t$src/gone"
}

run_case "incremental backup picks up every kind of change" case_changes_detected
run_case "unchanged data adds almost nothing" case_unchanged
run_case "same content under two names stored once" case_same_content
run_case "100-byte insertion re-stores only nearby chunks" case_insert
run_case "--type full re-reads everything, stores nothing new" case_full
run_case "--type differential chains to the latest full" case_differential
run_case "stats reflect deduplication" case_stats
finish
