#!/usr/bin/env bash
# s3.sh - the S3 driver against a real S3-compatible server (@20minutes/s3rver 4.0.4, which
# checks SigV4 signatures) on 127.0.0.1: the storage conformance suite (single and multipart
# uploads), a round trip with the coffer binary (init, backup, snapshots, restore, diff,
# check --read-data), and failure cases (wrong secret, missing bucket, unreachable server).
#
# Exit 77 (skipped) when node/npm or the server is unavailable, unless COFFER_REQUIRE_DRIVERS
# names s3 (then exit 1). COFFER_S3_BENCH=1 also times a 100 MB backup.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
rl_init s3

CONF="${CONFORMANCE_BIN:-$RL_ROOT/build/dev/conformance_storage}"
COFFER="${COFFER_BIN:-$RL_ROOT/build/dev/coffer}"
for b in "$CONF" "$COFFER"; do
    if [[ ! -x "$b" ]]; then
        echo "FAIL - binary not found: $b (build first, or set CONFORMANCE_BIN / COFFER_BIN)"
        echo "0 passed, 1 failed"
        exit 1
    fi
done

DATA="$RL_TMP/s3data"
rl_s3rver_start "$DATA" || rl_unavailable "$RL_S3_WHY"
rl_info "s3rver ($RL_S3RVER_PKG) on 127.0.0.1:$S3_PORT"
rl_s3_env
ENDPOINT="http://127.0.0.1:$S3_PORT"
export COFFER_PASSWORD="s3-conformance-password"
export LC_ALL=C

# ---------------------------------------------------------------------------------------------

conformance() {
    "$CONF" "s3:$ENDPOINT/bucket/prefix"
}

conformance_multipart() {
    # Every object over 1 MiB goes up in 1 MiB parts (the suite's 3 MiB objects: 3 parts).
    COFFER_S3_MULTIPART_THRESHOLD=1M COFFER_S3_PART_SIZE=1M "$CONF" "s3:$ENDPOINT/mpbucket/mp"
}

conformance_no_prefix() {
    # A repository at the root of its own bucket.
    "$CONF" "s3:$ENDPOINT/rootbucket"
}

roundtrip() {
    local repo="s3:$ENDPOINT/bucket/repo" src="$RL_TMP/src" dst="$RL_TMP/restore" n
    rl_gen_tree "$src" 30
    "$COFFER" -r "$repo" init --kdf-log-n 10 || return 1
    "$COFFER" -r "$repo" -q backup "$src" || return 1
    echo "more" >"$src/small/added"
    "$COFFER" -r "$repo" -q backup "$src" || return 1
    n=$("$COFFER" -r "$repo" --json snapshots | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))') || return 1
    [[ "$n" == 2 ]] || { echo "expected 2 snapshots, got $n"; return 1; }
    "$COFFER" -r "$repo" restore latest --target "$dst" || return 1
    diff -r "$src" "$dst$src" || { echo "restored tree differs"; return 1; }
    "$COFFER" -r "$repo" check --read-data || return 1
    # a fresh init over an existing repository is refused
    if "$COFFER" -r "$repo" init --kdf-log-n 10 2>"$RL_TMP/reinit.err"; then
        echo "init over an existing repository succeeded"
        return 1
    fi
}

wrong_secret() {
    local repo="s3:$ENDPOINT/bucket/wrongsecret" rc=0 out="$RL_TMP/wrong.out"
    AWS_SECRET_ACCESS_KEY="not-the-secret" "$COFFER" -r "$repo" init --kdf-log-n 10 >"$out" 2>&1 || rc=$?
    cat "$out"
    rl_clean_failure "$rc" "$out" || return 1
    grep -qE 'SignatureDoesNotMatch|AccessDenied' "$out" || { echo "no server error code in the message"; return 1; }
    ! grep -q 'not-the-secret' "$out" || { echo "the secret was printed"; return 1; }
    # nothing was written: the server has no object under the prefix, and the repository
    # does not exist for the right credentials either
    if [[ -e "$DATA/bucket/wrongsecret" ]]; then
        echo "objects were written:"
        find "$DATA/bucket/wrongsecret" | head
        return 1
    fi
    rc=0
    "$COFFER" -r "$repo" snapshots >"$out" 2>&1 || rc=$?
    rl_clean_failure "$rc" "$out" || return 1
    [[ $rc -eq 10 ]] || { cat "$out"; echo "expected exit 10 (no repository), got $rc"; return 1; }
    # an unknown access key is refused the same way
    rc=0
    AWS_ACCESS_KEY_ID=NOSUCHKEY "$COFFER" -r "s3:$ENDPOINT/bucket/repo" snapshots >"$out" 2>&1 || rc=$?
    cat "$out"
    rl_clean_failure "$rc" "$out" && grep -q 'InvalidAccessKeyId' "$out"
}

missing_bucket() {
    local rc=0 out="$RL_TMP/missing.out"
    "$COFFER" -r "s3:$ENDPOINT/nosuchbucket/x" snapshots >"$out" 2>&1 || rc=$?
    cat "$out"
    rl_clean_failure "$rc" "$out" || return 1
    [[ $rc -eq 10 ]] || { echo "expected exit 10, got $rc"; return 1; }
    grep -q "bucket 'nosuchbucket' not found" "$out" || return 1
    [[ ! -e "$DATA/nosuchbucket" ]] || { echo "the bucket was created"; return 1; }
}

unreachable() {
    local port rc=0 out="$RL_TMP/unreach.out" t0 t1
    port=$(rl_free_port $((S3_PORT + 100)))
    t0=$(date +%s)
    COFFER_RETRIES=3 "$COFFER" -r "s3:http://127.0.0.1:$port/bucket/x" snapshots >"$out" 2>&1 || rc=$?
    t1=$(date +%s)
    cat "$out"
    rl_clean_failure "$rc" "$out" || return 1
    grep -q 'gave up after 3 attempts' "$out" || return 1
    ((t1 - t0 < 30)) || { echo "took $((t1 - t0)) s"; return 1; }
}

no_credentials() {
    local rc=0 out="$RL_TMP/nocreds.out"
    env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY HOME="$RL_TMP/nohome" \
        "$COFFER" -r "s3:$ENDPOINT/bucket/repo" snapshots >"$out" 2>&1 || rc=$?
    cat "$out"
    rl_clean_failure "$rc" "$out" && grep -q 'no s3 credentials' "$out"
}

bench() {
    local repo="s3:$ENDPOINT/bucket/bench" src="$RL_TMP/bench" t0 t1
    mkdir -p "$src"
    head -c $((100 * 1048576)) /dev/urandom >"$src/random.bin"
    "$COFFER" -r "$repo" init --kdf-log-n 10 >/dev/null || return 1
    t0=$(date +%s.%N)
    "$COFFER" -r "$repo" -q backup "$src" || return 1
    t1=$(date +%s.%N)
    rl_info "100 MiB backup to s3rver: $(python3 -c "import sys; t=float(sys.argv[2])-float(sys.argv[1]); print('%.2f s, %.0f MiB/s' % (t, 100/t))" "$t0" "$t1")"
    t0=$(date +%s.%N)
    "$COFFER" -r "$repo" restore latest --target "$RL_TMP/bench-restore" >/dev/null || return 1
    t1=$(date +%s.%N)
    rl_info "100 MiB restore from s3rver: $(python3 -c "import sys; t=float(sys.argv[2])-float(sys.argv[1]); print('%.2f s, %.0f MiB/s' % (t, 100/t))" "$t0" "$t1")"
    cmp "$src/random.bin" "$RL_TMP/bench-restore$src/random.bin"
}

rl_case "conformance suite (s3:$ENDPOINT/bucket/prefix)" conformance
rl_case "conformance suite, multipart uploads (1 MiB parts)" conformance_multipart
rl_case "conformance suite, repository at the bucket root" conformance_no_prefix
rl_case "round trip: init, 2 backups of ~30 MB, snapshots, restore, diff, check --read-data" roundtrip
rl_case "wrong secret: refused with the server's error, nothing written" wrong_secret
rl_case "missing bucket: exit 10 (no repository), nothing created" missing_bucket
rl_case "unreachable server: clean failure after the retries" unreachable
rl_case "no credentials: clear error" no_credentials
if [[ "${COFFER_S3_BENCH:-0}" == 1 ]]; then
    rl_case "benchmark: 100 MiB backup and restore" bench
fi
rl_finish
