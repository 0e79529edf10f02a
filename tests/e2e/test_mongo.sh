#!/usr/bin/env bash
# test_mongo.sh - `coffer mongo backup|restore|list` against stub mongodump/mongorestore
# programs written below (no MongoDB server is packaged for these machines). The stubs record
# their argv, the --config file they were given (content and mode) and the password-like
# variables of their environment. The stub mongodump writes a fixed 6 MiB pseudo-random byte
# stream: a stand-in for an archive, NOT a real mongodump archive (coffer does not parse the
# archive; it stores the bytes). The stub mongorestore writes its stdin to a file.
# Asserted: the exact argv the adapter passes, the password never in argv, environment or
# coffer's output, byte-identical restores, dedup of a second dump, failing/killed dumps
# publishing nothing, a restore failing mid-stream, a missing tool or snapshot, --json.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STUBS="$TMP/stubs"
REC="$TMP/rec" # where the stubs record (MONGOSTUB_DIR; COFFER_* is not passed to the tools)
mkdir -p "$STUBS" "$REC"
export MONGOSTUB_DIR="$REC"
PW='pw-Zq7!x"y\z'         # quotes and backslashes: the config file must escape them
URIPW='uripw-Kd93'
python3 -c 'import random,sys; sys.stdout.buffer.write(random.Random(20261122).randbytes(6*1048576))' >"$REC/stream.bin"

cat >"$STUBS/mongodump" <<'EOF'
#!/bin/bash
# stub mongodump: records, then plays the mode in $REC/dump.mode
R="$MONGOSTUB_DIR"
if [[ "${1:-}" == "--version" ]]; then
    printf 'mongodump version: 100.9.4-stub\ngit version: 0000\nGo version: go1.21\n'
    exit 0
fi
printf "%s\n" "$0" "$@" >"$R/dump.argv"
rm -f "$R/dump.config" "$R/dump.config.mode" "$R/dump.config.path"
for a in "$@"; do
    case "$a" in --config=*)
        f="${a#--config=}"
        echo "$f" >"$R/dump.config.path"
        cp "$f" "$R/dump.config"
        stat -c %a "$f" >"$R/dump.config.mode"
        ;;
    esac
done
env | grep -iE 'pass|mongo_uri' >"$R/dump.env"
mode=$(cat "$R/dump.mode" 2>/dev/null || echo ok)
case "$mode" in
ok) cat "$R/stream.bin" ;;
fail)
    head -c 1048576 "$R/stream.bin"
    echo "2026-11-22T01:00:00.000+0000	writing admin.system.version to archive on stdout" >&2
    echo "2026-11-22T01:00:01.000+0000	Failed: error writing data for collection app.users: connection(db:27017) socket was unexpectedly closed" >&2
    exit 1
    ;;
killed)
    head -c 2097152 "$R/stream.bin"
    echo "dumping app.users" >&2
    kill -KILL $$
    ;;
esac
EOF

cat >"$STUBS/mongorestore" <<'EOF'
#!/bin/bash
# stub mongorestore: records, then plays the mode in $REC/restore.mode
R="$MONGOSTUB_DIR"
printf "%s\n" "$0" "$@" >"$R/restore.argv"
rm -f "$R/restore.config"
for a in "$@"; do
    case "$a" in --config=*) cp "${a#--config=}" "$R/restore.config" ;; esac
done
env | grep -iE 'pass|mongo_uri' >"$R/restore.env"
mode=$(cat "$R/restore.mode" 2>/dev/null || echo ok)
case "$mode" in
ok) cat >"$R/restored.bin" ;;
fail)
    head -c 65536 >/dev/null
    echo "2026-11-22T01:00:00.000+0000	Failed: app.users: error restoring from archive on stdin: E11000 duplicate key" >&2
    exit 3
    ;;
early) head -c 65536 >/dev/null; exit 0 ;;
esac
EOF
chmod 0755 "$STUBS/mongodump" "$STUBS/mongorestore"
DUMP="$STUBS/mongodump"
RESTORE="$STUBS/mongorestore"
export PATH="$STUBS:$PATH"

REPO="$TMP/repo"
new_repo "$REPO"
cfr() { "$COFFER" --repo "$REPO" "$@"; }
nsnaps() { "$COFFER" --repo "$REPO" --json snapshots | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }

# argv_is FILE ARG...: the recorded argv is exactly ARG... ('--config=*' matches any path)
argv_is() {
    local file=$1
    shift
    local want got
    want=$(printf '%s\n' "$@")
    got=$(sed -E 's/^--config=.*/--config=*/' "$file")
    if [[ "$got" != "$want" ]]; then
        note "argv in $(basename "$file") differs:"$'\n'"$(diff <(echo "$want") <(echo "$got") | sed 's/^/  | /')"
        return 1
    fi
}

# no_secret FILE...: neither password occurs in the files
no_secret() {
    local f
    for f in "$@"; do
        [[ -f "$f" ]] || continue
        if grep -aqF -e "$PW" -e "$URIPW" "$f"; then
            note "a password appears in $(basename "$f")"
        fi
    done
}

case_backup_argv() {
    echo ok >"$REC/dump.mode"
    COFFER_MONGO_PASSWORD="$PW" expect_exit 0 cfr --json mongo backup --host db.example --port 27018 \
        --username bk --authentication-database admin --tag nightly || return 1
    SNAP1=$(json_get "$OUT" "j['snapshot_id']")
    argv_is "$REC/dump.argv" "$DUMP" --archive '--config=*' --host=db.example --port=27018 \
        --username=bk --authenticationDatabase=admin --oplog
    check "the --config file was not mode 600 ($(cat "$REC/dump.config.mode" 2>/dev/null))" \
        test "$(cat "$REC/dump.config.mode" 2>/dev/null)" = 600
    local want
    want=$(printf 'password: "%s"' 'pw-Zq7!x\"y\\z')
    check "the --config file does not hold the escaped password" grep -qxF "$want" "$REC/dump.config"
    check "the --config file was not removed after the dump" test ! -e "$(cat "$REC/dump.config.path")"
    check "the tool's environment has a password variable: $(cat "$REC/dump.env")" test ! -s "$REC/dump.env"
    no_secret "$REC/dump.argv" "$OUT" "$ERR"
    check "summary: bytes_total is not the stream's size" \
        test "$(json_get "$OUT" "j['bytes_total']")" = "$(stat -c %s "$REC/stream.bin")"
    check "summary: tool_version" test "$(json_get "$OUT" "j['tool_version']")" = 100.9.4-stub
    check "summary: oplog" test "$(json_get "$OUT" "j['oplog']")" = True
    expect_exit 0 cfr cat snapshot "$SNAP1" || return 1
    check "snapshot metadata (kind, oplog, host, tool version, db)" test \
        "$(json_get "$OUT" "(j['source']['kind'], j['mongodb']['oplog'], j['mongodb']['host'], j['mongodb']['tool_version'], j['mongodb']['db'], j['tags'])")" \
        = "('mongodb', True, 'db.example', '100.9.4-stub', '', ['nightly'])"
    no_secret "$OUT"
    expect_exit 0 cfr dump "$SNAP1" /mongodump.archive || return 1
    check "the stored archive differs from what mongodump wrote" cmp -s "$OUT" "$REC/stream.bin"
}

case_restore_bytes() {
    echo ok >"$REC/restore.mode"
    rm -f "$REC/restored.bin"
    MONGODB_PASSWORD="$PW" expect_exit 0 cfr --json mongo restore latest --uri mongodb://h2:27017 \
        --drop --ns-include 'app.*' --ns-from 'app.*' --ns-to 'app2.*' || return 1
    argv_is "$REC/restore.argv" "$RESTORE" --archive '--config=*' --uri=mongodb://h2:27017 --drop \
        '--nsInclude=app.*' '--nsFrom=app.*' '--nsTo=app2.*' --oplogReplay
    check "restore fed back different bytes" cmp -s "$REC/restored.bin" "$REC/stream.bin"
    check "summary: oplog_replay" test "$(json_get "$OUT" "j['oplog_replay']")" = True
    check "summary: snapshot" test "$(json_get "$OUT" "j['snapshot_id']")" = "$SNAP1"
    check "the tool's environment has a password variable" test ! -s "$REC/restore.env"
    no_secret "$REC/restore.argv" "$OUT" "$ERR"
    # no password: no --config; --no-oplog-replay honoured
    expect_exit 0 cfr mongo restore "${SNAP1:0:8}" --host h3 --no-oplog-replay || return 1
    argv_is "$REC/restore.argv" "$RESTORE" --archive --host=h3
    check "restore of a prefix fed back different bytes" cmp -s "$REC/restored.bin" "$REC/stream.bin"
}

case_dedup() {
    expect_exit 0 cfr --json mongo backup --host db.example || return 1
    local total added
    total=$(json_get "$OUT" "j['bytes_total']")
    added=$(json_get "$OUT" "j['bytes_added']")
    check "a second identical dump added $added of $total bytes (want < 2%)" \
        test "$((added * 50))" -lt "$total"
    argv_is "$REC/dump.argv" "$DUMP" --archive --host=db.example --oplog
}

case_db_collection() {
    expect_exit 0 cfr --json mongo backup --host db.example --db app --collection users || return 1
    local id
    id=$(json_get "$OUT" "j['snapshot_id']")
    argv_is "$REC/dump.argv" "$DUMP" --archive --host=db.example --db=app --collection=users
    check "summary: oplog should be false for --db" test "$(json_get "$OUT" "j['oplog']")" = False
    expect_exit 0 cfr mongo restore "$id" --host h2 || return 1
    argv_is "$REC/restore.argv" "$RESTORE" --archive --host=h2
    # --oplog with --db is refused, before running anything
    rm -f "$REC/dump.argv"
    expect_exit 2 cfr mongo backup --db app --oplog || return 1
    output_has "--oplog is only possible for a dump of the whole server" "no clear refusal"
    check "mongodump ran although --oplog --db was refused" test ! -e "$REC/dump.argv"
    expect_exit 2 cfr mongo backup --collection users || return 1
    expect_exit 2 cfr mongo backup --uri mongodb://a --host b || return 1
}

case_uri_password() {
    local before
    before=$(nsnaps)
    COFFER_MONGO_URI="mongodb://bk:$URIPW@db1:27017,db2:27017/?authSource=admin&replicaSet=rs0" \
        expect_exit 0 cfr --json mongo backup || return 1
    argv_is "$REC/dump.argv" "$DUMP" --archive '--config=*' --oplog
    check "the --config file does not hold the URI" \
        grep -qxF "uri: \"mongodb://bk:$URIPW@db1:27017,db2:27017/?authSource=admin&replicaSet=rs0\"" "$REC/dump.config"
    check "summary: uri not redacted" test "$(json_get "$OUT" "j['uri']")" = \
        "mongodb://bk@db1:27017,db2:27017/?authSource=admin&replicaSet=rs0"
    no_secret "$REC/dump.argv" "$OUT" "$ERR"
    expect_exit 0 cfr mongo list || return 1
    output_has "mongodb://bk@db1:27017" "list does not show the redacted uri"
    no_secret "$OUT" "$ERR"
    expect_exit 0 cfr --json mongo list || return 1
    check "list --json: wrong number of dumps" test "$(json_get "$OUT" "len(j)")" = $((before + 1))
    check "list --json: fields" test "$(json_get "$OUT" "(j[0]['tool_version'], j[0]['oplog'], j[0]['host'])")" = \
        "('100.9.4-stub', True, 'db.example')"
}

case_failing_dump() {
    local before after
    before=$(nsnaps)
    echo fail >"$REC/dump.mode"
    COFFER_MONGO_PASSWORD="$PW" expect_exit 1 cfr mongo backup --host db.example || return 1
    output_has "coffer: error: mongodump failed \(exit 1\): .*Failed: error writing data for collection app.users" \
        "no error naming mongodump's exit status and last stderr line"
    output_has "coffer: mongodump: .*writing admin.system.version" "the stderr tail is not shown"
    no_secret "$OUT" "$ERR"
    check "the --config file was not removed after a failed dump" test ! -e "$(cat "$REC/dump.config.path")"
    echo killed >"$REC/dump.mode"
    expect_exit 1 cfr --json mongo backup --host db.example || return 1
    output_has '"error":"mongodump was killed by signal 9: dumping app.users"' "no JSON error for the killed dump"
    output_has '"exit_code":1' "JSON error without exit_code 1"
    echo ok >"$REC/dump.mode"
    after=$(nsnaps)
    check "a failed dump published a snapshot ($before -> $after)" test "$before" = "$after"
}

case_missing_tool() {
    local before after
    before=$(nsnaps)
    PATH="/usr/bin:/bin" expect_exit 1 "$COFFER" --repo "$REPO" mongo backup || return 1
    output_has "coffer: error: program 'mongodump' not found in PATH" "no clear error for a missing mongodump"
    output_has "^hint: install the MongoDB Database Tools" "no hint"
    COFFER_MONGODUMP="$TMP/nonexistent/mongodump" expect_exit 1 cfr mongo backup || return 1
    output_has "program '$TMP/nonexistent/mongodump' not found or not executable" "COFFER_MONGODUMP not used"
    # --mongodump names the program (a copy elsewhere)
    mkdir -p "$TMP/other"
    cp "$DUMP" "$TMP/other/my-mongodump"
    PATH="/usr/bin:/bin" expect_exit 0 "$COFFER" --repo "$REPO" mongo backup --no-oplog --mongodump "$TMP/other/my-mongodump" || return 1
    argv_is "$REC/dump.argv" "$TMP/other/my-mongodump" --archive
    PATH="/usr/bin:/bin" expect_exit 1 "$COFFER" --repo "$REPO" mongo restore || return 1
    output_has "program 'mongorestore' not found in PATH" "no clear error for a missing mongorestore"
    after=$(nsnaps)
    check "snapshots: $before -> $after, want one more" test "$after" = $((before + 1))
}

case_restore_failures() {
    echo fail >"$REC/restore.mode"
    expect_exit 1 cfr mongo restore "$SNAP1" --host h2 || return 1
    output_has "coffer: error: restoring snapshot ${SNAP1:0:8} failed: mongorestore failed \(exit 3\): .*E11000 duplicate key" \
        "no error naming mongorestore's failure"
    echo early >"$REC/restore.mode"
    expect_exit 1 cfr mongo restore "$SNAP1" --host h2 || return 1
    output_has "mongorestore exited 0 before reading the whole archive" "an early exit of mongorestore went unnoticed"
    echo ok >"$REC/restore.mode"
    expect_exit 1 cfr mongo restore deadbeef || return 1
    output_has "no snapshot 'deadbeef' found" "no error for a missing snapshot"
    # a snapshot of another kind
    echo data >"$TMP/f.txt"
    expect_exit 0 cfr --json backup "$TMP/f.txt" || return 1
    local other
    other=$(json_get "$OUT" "j['snapshot_id']")
    expect_exit 1 cfr mongo restore "$other" || return 1
    output_has "is not a MongoDB dump" "a file snapshot was accepted"
    # a repository without dumps
    new_repo "$TMP/empty"
    expect_exit 1 "$COFFER" --repo "$TMP/empty" mongo restore || return 1
    output_has "no MongoDB dump in the repository" "no error for a repository without dumps"
    expect_exit 2 cfr mongo restore --ns-from a.* || return 1
}

run_case "mongo backup: exact argv, password only in a removed 0600 --config file" case_backup_argv
run_case "mongo restore: byte-identical stream into mongorestore, exact argv" case_restore_bytes
run_case "a second identical dump is deduplicated" case_dedup
run_case "--db/--collection: no --oplog, no --oplogReplay; --oplog --db refused" case_db_collection
run_case "a URI holding a password goes into --config; stored and listed redacted" case_uri_password
run_case "failing and killed dumps: non-zero, stderr tail shown, nothing published" case_failing_dump
run_case "missing tools: documented error and hint; --mongodump and COFFER_MONGODUMP" case_missing_tool
run_case "restore: failing or early-exiting mongorestore, missing snapshots" case_restore_failures
finish
