#!/usr/bin/env bash
# s3.sh - the S3 driver against a real S3-compatible server (@20minutes/s3rver 4.0.4, which
# checks SigV4 signatures) on 127.0.0.1: the storage conformance suite (single and multipart
# uploads), a round trip with the coffer binary (init, backup, snapshots, restore, diff,
# check --read-data), the full end-to-end scenario of e2e_scenario.sh, failure cases (wrong
# secret or key: exit 15 and nothing written; missing bucket, unreachable server), and checks
# that no credential reaches any output or file, with every debug option, in success and
# failure paths, also through the fault proxy's 403 and 500 answers.
#
# Exit 77 (skipped) when node/npm or the server is unavailable, unless COFFER_REQUIRE_DRIVERS
# names s3 (then exit 1). COFFER_S3_BENCH=1 also times a 100 MB backup.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/e2e_scenario.sh"
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
    [[ $rc -eq 15 ]] || { echo "expected exit 15 (storage refused the credentials), got $rc"; return 1; }
    grep -qE 'SignatureDoesNotMatch|AccessDenied' "$out" || { echo "no server error code in the message"; return 1; }
    grep -qF "127.0.0.1:$S3_PORT" "$out" || { echo "the message does not name the server"; return 1; }
    grep -q 'refused the credentials' "$out" || { echo "the message does not say the credentials were refused"; return 1; }
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
    rl_clean_failure "$rc" "$out" && grep -q 'InvalidAccessKeyId' "$out" || return 1
    [[ $rc -eq 15 ]] || { echo "expected exit 15 for an unknown key, got $rc"; return 1; }
    # a backup into an existing repository with a wrong secret: exit 15, the bucket unchanged
    local before after
    before=$(cd "$DATA/bucket" && find . -type f -printf '%p %s %T@\n' | sort | sha256sum)
    mkdir -p "$RL_TMP/ws-src" && echo data >"$RL_TMP/ws-src/f"
    rc=0
    AWS_SECRET_ACCESS_KEY="not-the-secret" "$COFFER" -r "s3:$ENDPOINT/bucket/repo" backup \
        "$RL_TMP/ws-src" >"$out" 2>&1 || rc=$?
    cat "$out"
    [[ $rc -eq 15 ]] || { echo "backup with a wrong secret: expected exit 15, got $rc"; return 1; }
    after=$(cd "$DATA/bucket" && find . -type f -printf '%p %s %T@\n' | sort | sha256sum)
    [[ "$before" == "$after" ]] || { echo "the bucket changed"; return 1; }
    # and with the JSON error output, the code and exit code name the storage credentials
    rc=0
    AWS_SECRET_ACCESS_KEY="not-the-secret" "$COFFER" --json -r "s3:$ENDPOINT/bucket/repo" \
        snapshots >"$out" 2>&1 || rc=$?
    cat "$out"
    python3 -c 'import json,sys; j=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); sys.exit(not (j["code"]=="STORAGE_AUTH" and j["exit_code"]==15))' "$out" ||
        { echo "--json error does not carry code STORAGE_AUTH and exit_code 15"; return 1; }
}

# Credentials never printed nor written: distinctive key pair and session token; every
# command with -v / --json / COFFER_HTTP_DEBUG=1, with the right and with wrong secrets, and
# through the fault proxy answering 403 (echoing the request and its token back) and 500.
leaks() {
    local d="$RL_TMP/leak" repo="s3:$ENDPOINT/leakbucket/repo" pport ppid rc=0
    local token="IQoJb3JpZ2luX2VjSessionTokenCanary/AbC+dEf9876543210zzz"
    mkdir -p "$d/out" "$d/tmp" "$d/src"
    echo "leak test data" >"$d/src/a.txt"
    lk() { # lk NAME ARGS...: one coffer run with every verbosity option; any exit accepted
        local name=$1
        shift
        AWS_ACCESS_KEY_ID=$RL_S3_KEY2 AWS_SECRET_ACCESS_KEY=${LK_SECRET:-$RL_S3_SECRET2} \
            AWS_SESSION_TOKEN=$token COFFER_HTTP_DEBUG=1 TMPDIR="$d/tmp" \
            COFFER_CACHE_DIR="$d/cache" "$COFFER" "$@" >"$d/out/$name.out" 2>"$d/out/$name.err" \
            </dev/null
    }
    lk init -v -r "$repo" init --kdf-log-n 10 || { cat "$d/out/init.err"; return 1; }
    lk backup -v -v -r "$repo" backup "$d/src" || { cat "$d/out/backup.err"; return 1; }
    lk snapshots --json -r "$repo" snapshots || return 1
    lk check -v -r "$repo" check --read-data || return 1
    lk restore -v -r "$repo" restore latest --verify --target "$d/restore" || return 1
    lk stats --json -r "$repo" stats || return 1
    LK_SECRET="wrong-$RL_S3_SECRET2" lk wrong1 -v -r "$repo" snapshots && { echo "a wrong secret was accepted"; return 1; }
    LK_SECRET="wrong-$RL_S3_SECRET2" lk wrong2 --json -r "$repo" backup "$d/src"
    LK_SECRET="wrong-$RL_S3_SECRET2" lk wrong3 -v -r "s3:$ENDPOINT/leakbucket/other" init --kdf-log-n 10
    # through the fault proxy: every request denied (403 echoing the request target and the
    # token header), then every request answered 500
    pport=$(rl_free_port $((S3_PORT + 200))) || return 1
    rl_bg "$d/proxy.log" python3 "$RL_ROOT/tests/tools/faultproxy.py" --upstream "127.0.0.1:$S3_PORT" \
        --port "$pport" --rate 1 --kinds deny --seed 1
    ppid=$RL_PID
    rl_wait_for 20 grep -q listening "$d/proxy.log" || { cat "$d/proxy.log"; return 1; }
    local prepo="s3:http://127.0.0.1:$pport/leakbucket/repo"
    rc=0
    lk deny1 -v -r "$prepo" snapshots || rc=$?
    [[ $rc -eq 15 ]] || { echo "a 403 through the proxy gave exit $rc, expected 15"; cat "$d/out/deny1.err"; return 1; }
    grep -q 'AccessDenied' "$d/out/deny1.err" || { echo "no AccessDenied in the message"; cat "$d/out/deny1.err"; return 1; }
    lk deny2 --json -r "$prepo" backup "$d/src"
    curl -sS "http://127.0.0.1:$pport/__faultproxy/set?rate=0" >/dev/null
    lk proxied-ok -v -r "$prepo" snapshots || { echo "no access through the proxy at rate 0"; cat "$d/out/proxied-ok.err"; return 1; }
    rl_stop_pid "$ppid"
    rl_bg "$d/proxy2.log" python3 "$RL_ROOT/tests/tools/faultproxy.py" --upstream "127.0.0.1:$S3_PORT" \
        --port "$pport" --rate 1 --kinds error --seed 1
    ppid=$RL_PID
    rl_wait_for 20 grep -q listening "$d/proxy2.log" || { cat "$d/proxy2.log"; return 1; }
    COFFER_RETRIES=2 lk err500 -v -r "$prepo" snapshots && { echo "500s were accepted"; return 1; }
    COFFER_RETRIES=2 lk err500b --json -r "$prepo" backup "$d/src"
    rl_stop_pid "$ppid"
    SC_SECRETS=("$RL_S3_SECRET2" "wrong-$RL_S3_SECRET2" "$token")
    # the debug output was really on
    grep -q 'coffer-http' "$d/out/backup.err" || { echo "COFFER_HTTP_DEBUG produced nothing"; return 1; }
    sc_scan "outputs, cache and temporary files" "$d/out" "$d/cache" "$d/tmp" "$d/restore"
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
rl_case "wrong secret or key: exit 15 with the server's error, nothing written" wrong_secret
rl_case "credentials (secret key, session token) never in outputs, cache or temp files" leaks
SC_COFFER=$COFFER SC_TMP=$RL_TMP SC_REPO="s3:$ENDPOINT/bucket/e2e"
SC_STORED="s3_stored"
s3_nlocks() { find "$DATA/bucket/e2e/locks" -type f -name '*._S3rver_object' 2>/dev/null | wc -l; }
SC_NLOCKS=s3_nlocks
SC_SECRETS=("$RL_S3_SECRET2")
export AWS_ACCESS_KEY_ID=$RL_S3_KEY2 AWS_SECRET_ACCESS_KEY=$RL_S3_SECRET2
s3_stored() { find "$DATA/bucket/e2e" -type f -name '*._S3rver_object' -printf '%s\n' | awk '{ n += $1 } END { print n + 0 }'; }
sc_scenario rl_case
rl_s3_env
rl_case "missing bucket: exit 10 (no repository), nothing created" missing_bucket
rl_case "unreachable server: clean failure after the retries" unreachable
rl_case "no credentials: clear error" no_credentials
if [[ "${COFFER_S3_BENCH:-0}" == 1 ]]; then
    rl_case "benchmark: 100 MiB backup and restore" bench
fi
rl_finish
