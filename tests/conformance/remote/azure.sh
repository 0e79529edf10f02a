#!/usr/bin/env bash
# azure.sh - the Azure Blob driver against Azurite (npm azurite@3.35.0, azurite-blob, which
# checks SharedKey signatures and SAS tokens) on 127.0.0.1: the storage conformance suite
# (Put Blob; Put Block + Put Block List with paginated listings and a tier; a repository at a
# container root; a SAS token), a round trip with the coffer binary (init, two backups,
# snapshots, restore, diff, check --read-data, forget --prune, check), the full end-to-end
# scenario of e2e_scenario.sh, failure cases (wrong key or read-only SAS: exit 15 and nothing
# written; missing container, no credentials, account mismatch, emulator down), and checks
# that neither the account key nor a SAS token reaches any output or file, with every debug
# option, in success and failure paths, also through the fault proxy's 403 and 500 answers.
#
# Exit 77 (skipped) when node/npm or the emulator is unavailable, unless COFFER_REQUIRE_DRIVERS
# names azure (then exit 1). COFFER_AZURE_BENCH=1 also times a 100 MiB backup and restore.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/e2e_scenario.sh"
rl_init azure

CONF="${CONFORMANCE_BIN:-$RL_ROOT/build/dev/conformance_storage}"
COFFER="${COFFER_BIN:-$RL_ROOT/build/dev/coffer}"
for b in "$CONF" "$COFFER"; do
    if [[ ! -x "$b" ]]; then
        echo "FAIL - binary not found: $b (build first, or set CONFORMANCE_BIN / COFFER_BIN)"
        echo "0 passed, 1 failed"
        exit 1
    fi
done

AZURITE_VERSION=3.35.0
AZ_ACCOUNT=devstoreaccount1
# Azurite's well-known development account key (public, in Azurite's documentation).
AZ_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

# Install azurite once into $RL_CACHE/npm-azurite (reused across runs; ~20 s the first time).
azurite_install() {
    local dir="$RL_CACHE/npm-azurite" pkg
    pkg="$dir/node_modules/azurite/package.json"
    command -v node >/dev/null 2>&1 || { AZ_WHY="node is not installed"; return 1; }
    if ! grep -q "\"version\": \"$AZURITE_VERSION\"" "$pkg" 2>/dev/null; then
        command -v npm >/dev/null 2>&1 || { AZ_WHY="npm is not installed"; return 1; }
        mkdir -p "$dir" || { AZ_WHY="cannot create $dir"; return 1; }
        if ! (
            flock -w 600 9 || exit 1
            grep -q "\"version\": \"$AZURITE_VERSION\"" "$pkg" 2>/dev/null && exit 0
            npm install --prefix "$dir" --no-audit --no-fund --loglevel=error \
                "azurite@$AZURITE_VERSION" </dev/null >"$dir/install.log" 2>&1
        ) 9>"$dir.lock"; then
            AZ_WHY="npm install azurite@$AZURITE_VERSION failed (see $dir/install.log)"
            return 1
        fi
    fi
    AZURITE_BIN="$dir/node_modules/.bin/azurite-blob"
    [[ -x "$AZURITE_BIN" ]] || { AZ_WHY="azurite-blob missing in $dir"; return 1; }
}

# Start azurite-blob on a free port of 127.0.0.1 with its data in the scratch directory.
azurite_start() {
    AZ_PORT=$(rl_free_port) || { AZ_WHY="no free port"; return 1; }
    AZ_LOG="$RL_TMP/azurite.log"
    # --disableTelemetry: no attempt to reach the network; --silent: no access log
    rl_bg "$AZ_LOG" "$AZURITE_BIN" --blobHost 127.0.0.1 --blobPort "$AZ_PORT" \
        --location "$RL_TMP/azurite-data" --disableTelemetry --silent
    AZ_PID=$RL_PID
    if ! rl_wait_for 60 grep -q 'successfully listens' "$AZ_LOG" || ! rl_wait_port "$AZ_PORT" 10; then
        AZ_WHY="azurite did not start: $(tail -n 5 "$AZ_LOG" 2>/dev/null | tr '\n' ' ')"
        rl_stop_pid "$AZ_PID"
        return 1
    fi
}

t0=$(date +%s.%N)
azurite_install || rl_unavailable "$AZ_WHY"
t1=$(date +%s.%N)
azurite_start || rl_unavailable "$AZ_WHY"
t2=$(date +%s.%N)
rl_info "azurite@$AZURITE_VERSION on 127.0.0.1:$AZ_PORT ($(python3 -c 'import sys; a, b, c = map(float, sys.argv[1:]); print("install or check %.1f s, start %.1f s" % (b - a, c - b))' "$t0" "$t1" "$t2"))"

# Only the emulator's credentials, nothing from the caller's Azure setup.
unset AZURE_STORAGE_SAS_TOKEN AZURE_STORAGE_CONNECTION_STRING COFFER_AZURE_TIER \
    COFFER_AZURE_BLOCK_THRESHOLD COFFER_AZURE_BLOCK_SIZE COFFER_AZURE_LIST_MAX \
    COFFER_AZURE_ENDPOINT_SUFFIX COFFER_INSECURE_TLS COFFER_HTTP_DEBUG
export AZURE_STORAGE_ACCOUNT=$AZ_ACCOUNT AZURE_STORAGE_KEY=$AZ_KEY
ENDPOINT="http://127.0.0.1:$AZ_PORT/$AZ_ACCOUNT"
export COFFER_PASSWORD="azure-conformance-password"
export LC_ALL=C

# A service SAS for a container (sv 2022-11-02, http, expires in an hour): PERMS CONTAINER.
sas_token() {
    local perms=$1 container=$2 se sts sig hexkey
    hexkey=$(printf '%s' "$AZ_KEY" | base64 -d | od -An -tx1 -v | tr -d ' \n')
    se=$(date -u -d '+1 hour' '+%Y-%m-%dT%H:%M:%SZ')
    sts="$perms"$'\n\n'"$se"$'\n'"/blob/$AZ_ACCOUNT/$container"$'\n\n\nhttp\n2022-11-02\nc\n\n\n\n\n\n\n'
    sig=$(printf '%s' "$sts" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$hexkey" -binary | base64 -w0)
    printf 'sv=2022-11-02&se=%s&sr=c&sp=%s&spr=http&sig=%s' "${se//:/%3A}" "$perms" \
        "$(printf '%s' "$sig" | sed 's/+/%2B/g; s#/#%2F#g; s/=/%3D/g')"
}

# ---------------------------------------------------------------------------------------------

conformance() {
    "$CONF" "azure:$ENDPOINT/coffer/prefix"
}

conformance_blocks() {
    # Every object over 1 MiB goes up as 1 MiB blocks plus a block list (the suite's 3 MiB
    # objects: 3 blocks); listings come in pages of 7 (NextMarker); blobs in the Cool tier.
    COFFER_AZURE_BLOCK_THRESHOLD=1M COFFER_AZURE_BLOCK_SIZE=1M COFFER_AZURE_LIST_MAX=7 \
        COFFER_AZURE_TIER=Cool COFFER_HTTP_DEBUG=1 "$CONF" "azure:$ENDPOINT/blocks/bl" \
        2>"$RL_TMP/blocks.debug" || { tail -n 20 "$RL_TMP/blocks.debug"; return 1; }
    local blocks lists pages
    blocks=$(grep -c 'comp=block&blockid=.* -> 201' "$RL_TMP/blocks.debug")
    lists=$(grep -c 'comp=blocklist -> 201' "$RL_TMP/blocks.debug")
    pages=$(grep -c 'comp=list.*&marker=.* -> 200' "$RL_TMP/blocks.debug")
    echo "blocks $blocks, block lists $lists, continued listings $pages"
    ((blocks >= 6 && lists >= 2 && pages >= 10)) || { echo "block uploads or pagination not exercised"; return 1; }
}

conformance_root() {
    # A repository at the root of its own container (created by the suite's CREATE open).
    "$CONF" "azure:$ENDPOINT/rootcont"
}

conformance_sas() {
    # The container exists (the first suite created it); a SAS token with read, add, create,
    # write, delete and list permissions on it, and no key. Debug output must not carry it.
    local tok
    tok=$(sas_token racwdl coffer) || return 1
    env -u AZURE_STORAGE_KEY -u AZURE_STORAGE_ACCOUNT AZURE_STORAGE_SAS_TOKEN="?$tok" \
        COFFER_HTTP_DEBUG=1 "$CONF" "azure:$ENDPOINT/coffer/sas" 2>"$RL_TMP/sas.debug" ||
        { tail -n 20 "$RL_TMP/sas.debug"; return 1; }
    ! grep -q 'sig=' "$RL_TMP/sas.debug" || { echo "the SAS signature was printed"; return 1; }
    grep -q '<sas>' "$RL_TMP/sas.debug" || { echo "no debug output"; return 1; }
}

roundtrip() {
    local repo="azure:$ENDPOINT/coffer/repo" src="$RL_TMP/src" dst="$RL_TMP/restore" n
    rl_gen_tree "$src" 30
    "$COFFER" -r "$repo" init --kdf-log-n 10 || return 1
    "$COFFER" -r "$repo" -q backup "$src" || return 1
    echo "more" >"$src/small/added"
    "$COFFER" -r "$repo" -q backup "$src" || return 1
    n=$("$COFFER" -r "$repo" --json snapshots | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))') || return 1
    [[ "$n" == 2 ]] || { echo "expected 2 snapshots, got $n"; return 1; }
    "$COFFER" -r "$repo" snapshots || return 1
    "$COFFER" -r "$repo" restore latest --target "$dst" || return 1
    diff -r "$src" "$dst$src" || { echo "restored tree differs"; return 1; }
    "$COFFER" -r "$repo" check --read-data || return 1
    "$COFFER" -r "$repo" forget --keep-last 1 --prune || return 1
    n=$("$COFFER" -r "$repo" --json snapshots | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))') || return 1
    [[ "$n" == 1 ]] || { echo "expected 1 snapshot after forget, got $n"; return 1; }
    "$COFFER" -r "$repo" check || return 1
    # a fresh init over an existing repository is refused
    if "$COFFER" -r "$repo" init --kdf-log-n 10 2>"$RL_TMP/reinit.err"; then
        echo "init over an existing repository succeeded"
        return 1
    fi
}

wrong_key() {
    local repo="azure:$ENDPOINT/wrongkey/repo" rc=0 out="$RL_TMP/wrong.out"
    local bad='bm90LXRoZS1rZXktbm90LXRoZS1rZXktbm90LXRoZS1rZXk='
    AZURE_STORAGE_KEY=$bad "$COFFER" -r "$repo" init --kdf-log-n 10 >"$out" 2>&1 || rc=$?
    cat "$out"
    rl_clean_failure "$rc" "$out" || return 1
    [[ $rc -eq 15 ]] || { echo "expected exit 15 (storage refused the credentials), got $rc"; return 1; }
    grep -qiE 'AuthorizationFailure|AuthenticationFailed' "$out" || { echo "no server error code"; return 1; }
    grep -qF "127.0.0.1:$AZ_PORT" "$out" || { echo "the message does not name the server"; return 1; }
    grep -qi 'authenticate' "$out" || { echo "the message does not mention authentication"; return 1; }
    ! grep -qF "$bad" "$out" || { echo "the key was printed"; return 1; }
    ! grep -qF "$AZ_KEY" "$out" || { echo "a key was printed"; return 1; }
    # nothing was written: with the right key, the container does not even exist
    rc=0
    "$COFFER" -r "$repo" snapshots >"$out" 2>&1 || rc=$?
    cat "$out"
    rl_clean_failure "$rc" "$out" || return 1
    [[ $rc -eq 10 ]] || { echo "expected exit 10 (no repository), got $rc"; return 1; }
    grep -q "container 'wrongkey' not found" "$out" || return 1
    # a wrong key for an existing repository: exit 15 too, and nothing printed of the key
    rc=0
    AZURE_STORAGE_KEY=$bad "$COFFER" -r "azure:$ENDPOINT/coffer/repo" snapshots >"$out" 2>&1 || rc=$?
    cat "$out"
    rl_clean_failure "$rc" "$out" && [[ $rc -eq 15 ]] && ! grep -qF "$bad" "$out" || return 1
    # a backup with a wrong key into the existing repository: exit 15, the container unchanged
    local before after
    before=$(az_listing coffer repo/) || return 1
    mkdir -p "$RL_TMP/wk-src" && echo data >"$RL_TMP/wk-src/f"
    rc=0
    AZURE_STORAGE_KEY=$bad "$COFFER" -r "azure:$ENDPOINT/coffer/repo" backup "$RL_TMP/wk-src" >"$out" 2>&1 || rc=$?
    cat "$out"
    [[ $rc -eq 15 ]] || { echo "backup with a wrong key: expected exit 15, got $rc"; return 1; }
    after=$(az_listing coffer repo/) || return 1
    [[ -n "$before" && "$before" == "$after" ]] || { echo "the container changed"; return 1; }
}

# az_listing CONTAINER PREFIX: "name size etag" of every blob under PREFIX (List Blobs with a
# read/list SAS, independent of the driver).
az_listing() {
    local tok
    tok=$(sas_token rl "$1") || return 1
    curl -sS --max-time 20 "$ENDPOINT/$1?restype=container&comp=list&prefix=$2&maxresults=5000&$tok" |
        python3 -c '
import re, sys
x = sys.stdin.read()
if "<EnumerationResults" not in x:
    sys.exit("no listing: " + x[:200])
for b in re.findall(r"<Blob>(.*?)</Blob>", x, re.S):
    g = lambda t: (re.search("<%s>(.*?)</%s>" % (t, t), b, re.S) or [None, ""])[1]
    print(g("Name"), g("Content-Length"), g("Etag"))'
}

az_stored() {
    az_listing coffer e2e/ | awk '{ n += $2 } END { print n + 0 }'
}

# Neither the account key nor a SAS token is ever printed or written: every command with -v /
# --json / COFFER_HTTP_DEBUG=1, with right and wrong credentials, and through the fault proxy
# answering 403 (echoing the request with its SAS signature) and 500.
leaks() {
    local d="$RL_TMP/leak" repo="azure:$ENDPOINT/coffer/leak" pport ppid rc=0 tok badtok
    local bad='bm90LXRoZS1rZXktbm90LXRoZS1rZXktbm90LXRoZS1rZXk='
    tok=$(sas_token racwdl coffer) || return 1
    badtok=$(sas_token racwdl othercontainer) || return 1
    mkdir -p "$d/out" "$d/tmp" "$d/src"
    echo "leak test data" >"$d/src/a.txt"
    lk() { # lk NAME ARGS...: one coffer run with every verbosity option; any exit accepted
        local name=$1
        shift
        COFFER_HTTP_DEBUG=1 TMPDIR="$d/tmp" COFFER_CACHE_DIR="$d/cache" "$COFFER" "$@" \
            >"$d/out/$name.out" 2>"$d/out/$name.err" </dev/null
    }
    lk init -v -r "$repo" init --kdf-log-n 10 || { cat "$d/out/init.err"; return 1; }
    lk backup -v -v -r "$repo" backup "$d/src" || { cat "$d/out/backup.err"; return 1; }
    lk snapshots --json -r "$repo" snapshots || return 1
    lk check -v -r "$repo" check --read-data || return 1
    lk restore -v -r "$repo" restore latest --verify --target "$d/restore" || return 1
    AZURE_STORAGE_KEY= AZURE_STORAGE_SAS_TOKEN="$tok" lk sas-backup -v -r "$repo" backup "$d/src" ||
        { cat "$d/out/sas-backup.err"; return 1; }
    AZURE_STORAGE_KEY= AZURE_STORAGE_SAS_TOKEN="$tok" lk sas-json --json -r "$repo" stats || return 1
    AZURE_STORAGE_KEY=$bad lk wrong1 -v -r "$repo" snapshots && { echo "a wrong key was accepted"; return 1; }
    AZURE_STORAGE_KEY=$bad lk wrong2 --json -r "$repo" backup "$d/src"
    AZURE_STORAGE_KEY= AZURE_STORAGE_SAS_TOKEN="$badtok" lk wrong3 -v -r "$repo" snapshots &&
        { echo "a SAS token for another container was accepted"; return 1; }
    AZURE_STORAGE_KEY= AZURE_STORAGE_SAS_TOKEN="$badtok" lk wrong4 --json -r "$repo" backup "$d/src"
    pport=$(rl_free_port $((AZ_PORT + 200))) || return 1
    rl_bg "$d/proxy.log" python3 "$RL_ROOT/tests/tools/faultproxy.py" --upstream "127.0.0.1:$AZ_PORT" \
        --port "$pport" --rate 1 --kinds deny --seed 1
    ppid=$RL_PID
    rl_wait_for 20 grep -q listening "$d/proxy.log" || { cat "$d/proxy.log"; return 1; }
    local prepo="azure:http://127.0.0.1:$pport/$AZ_ACCOUNT/coffer/leak"
    rc=0
    AZURE_STORAGE_KEY= AZURE_STORAGE_SAS_TOKEN="$tok" lk deny1 -v -r "$prepo" snapshots || rc=$?
    [[ $rc -eq 15 ]] || { echo "a 403 through the proxy gave exit $rc, expected 15"; cat "$d/out/deny1.err"; return 1; }
    grep -q 'AccessDenied' "$d/out/deny1.err" || { echo "no AccessDenied in the message"; cat "$d/out/deny1.err"; return 1; }
    grep -q 'Access Denied for GET .*<redacted>' "$d/out/deny1.err" || { echo "the echoed token was not redacted"; cat "$d/out/deny1.err"; return 1; }
    AZURE_STORAGE_KEY= AZURE_STORAGE_SAS_TOKEN="$tok" lk deny2 --json -r "$prepo" backup "$d/src"
    lk deny3 -v -r "$prepo" snapshots
    rl_stop_pid "$ppid"
    rl_bg "$d/proxy2.log" python3 "$RL_ROOT/tests/tools/faultproxy.py" --upstream "127.0.0.1:$AZ_PORT" \
        --port "$pport" --rate 1 --kinds error --seed 1
    ppid=$RL_PID
    rl_wait_for 20 grep -q listening "$d/proxy2.log" || { cat "$d/proxy2.log"; return 1; }
    AZURE_STORAGE_KEY= AZURE_STORAGE_SAS_TOKEN="$tok" COFFER_RETRIES=2 lk err500 -v -r "$prepo" snapshots &&
        { echo "500s were accepted"; return 1; }
    COFFER_RETRIES=2 lk err500b --json -r "$prepo" backup "$d/src"
    rl_stop_pid "$ppid"
    grep -q 'coffer-http' "$d/out/backup.err" || { echo "COFFER_HTTP_DEBUG produced nothing"; return 1; }
    # the signatures (the bearer part of a SAS token) and the keys
    SC_SECRETS=("$AZ_KEY" "$bad" "$(printf '%s' "$tok" | sed 's/.*sig=//')"
        "$(printf '%s' "$badtok" | sed 's/.*sig=//')"
        "$(printf '%s' "$tok" | sed 's/.*sig=//' | python3 -c 'import sys,urllib.parse; print(urllib.parse.unquote(sys.stdin.read().strip()))')")
    sc_scan "outputs, cache and temporary files" "$d/out" "$d/cache" "$d/tmp" "$d/restore"
}

readonly_sas() {
    local tok rc=0 out="$RL_TMP/rosas.out"
    tok=$(sas_token rl coffer) || return 1
    # reading works ...
    env -u AZURE_STORAGE_KEY AZURE_STORAGE_SAS_TOKEN="$tok" \
        "$COFFER" -r "azure:$ENDPOINT/coffer/repo" snapshots >"$out" 2>&1 || { cat "$out"; return 1; }
    # ... writing is refused with the server's answer, and the token is not printed
    env -u AZURE_STORAGE_KEY AZURE_STORAGE_SAS_TOKEN="$tok" \
        "$COFFER" -r "azure:$ENDPOINT/coffer/readonly" init --kdf-log-n 10 >"$out" 2>&1 || rc=$?
    cat "$out"
    rl_clean_failure "$rc" "$out" || return 1
    [[ $rc -eq 15 ]] || { echo "expected exit 15, got $rc"; return 1; }
    grep -q '403' "$out" || return 1
    ! grep -q 'sig=' "$out" || { echo "the SAS token was printed"; return 1; }
}

missing_container() {
    local rc=0 out="$RL_TMP/missing.out" i
    for i in 1 2; do # the second time proves the first created nothing
        rc=0
        "$COFFER" -r "azure:$ENDPOINT/nosuchcontainer/x" snapshots >"$out" 2>&1 || rc=$?
        cat "$out"
        rl_clean_failure "$rc" "$out" || return 1
        [[ $rc -eq 10 ]] || { echo "expected exit 10, got $rc"; return 1; }
        grep -q "container 'nosuchcontainer' not found" "$out" || return 1
    done
    # an existing container with nothing under the prefix is no repository either
    rc=0
    "$COFFER" -r "azure:$ENDPOINT/coffer/nothing-here" snapshots >"$out" 2>&1 || rc=$?
    cat "$out"
    [[ $rc -eq 10 ]] || { echo "expected exit 10 for an empty prefix, got $rc"; return 1; }
}

no_credentials() {
    local rc=0 out="$RL_TMP/nocreds.out"
    env -u AZURE_STORAGE_KEY -u AZURE_STORAGE_SAS_TOKEN \
        "$COFFER" -r "azure:$ENDPOINT/coffer/repo" snapshots >"$out" 2>&1 || rc=$?
    cat "$out"
    rl_clean_failure "$rc" "$out" && grep -q 'no azure credentials' "$out" || return 1
    rc=0
    AZURE_STORAGE_ACCOUNT=someoneelse "$COFFER" -r "azure:$ENDPOINT/coffer/repo" snapshots >"$out" 2>&1 || rc=$?
    cat "$out"
    rl_clean_failure "$rc" "$out" && grep -q 'is not the account of the repository url' "$out" || return 1
    rc=0
    AZURE_STORAGE_KEY='not base64!' "$COFFER" -r "azure:$ENDPOINT/coffer/repo" snapshots >"$out" 2>&1 || rc=$?
    cat "$out"
    rl_clean_failure "$rc" "$out" && grep -q 'not a valid storage account key' "$out" &&
        ! grep -q 'not base64!' "$out"
}

emulator_down() {
    local rc=0 out="$RL_TMP/down.out" t0 t1
    rl_stop_pid "$AZ_PID"
    t0=$(date +%s)
    COFFER_RETRIES=3 "$COFFER" -r "azure:$ENDPOINT/coffer/repo" snapshots >"$out" 2>&1 || rc=$?
    t1=$(date +%s)
    cat "$out"
    rl_clean_failure "$rc" "$out" || return 1
    grep -q "unable to open 'azure:$ENDPOINT/coffer/repo': gave up after 3 attempts" "$out" || return 1
    grep -qi 'connect' "$out" || return 1
    ((t1 - t0 < 30)) || { echo "took $((t1 - t0)) s"; return 1; }
}

# Through tests/tools/faultproxy.py at a 10% fault rate (dropped connections before and after
# the request took effect, delays, 500/503/429 answers, truncated bodies, requests applied but
# answered 500), with packs going up as 1 MiB blocks: backup, restore and check --read-data
# succeed, and the restored tree is identical.
faults() {
    local pport plog="$RL_TMP/proxy.log" src="$RL_TMP/fsrc" dst="$RL_TMP/frestore" repo pid
    [[ -f "$RL_ROOT/tests/tools/faultproxy.py" ]] || { echo "no fault proxy"; return 1; }
    pport=$(rl_free_port $((AZ_PORT + 50))) || return 1
    rl_bg "$plog" python3 "$RL_ROOT/tests/tools/faultproxy.py" --upstream "127.0.0.1:$AZ_PORT" \
        --port "$pport" --rate "${COFFER_FAULT_RATE:-0.10}" --seed "${COFFER_FAULT_SEED:-7}" --delay-max 0.5
    pid=$RL_PID
    rl_wait_for 20 grep -q listening "$plog" || { cat "$plog"; return 1; }
    repo="azure:http://127.0.0.1:$pport/$AZ_ACCOUNT/faults/repo"
    rl_gen_tree "$src" 20
    export COFFER_AZURE_BLOCK_THRESHOLD=1M COFFER_AZURE_BLOCK_SIZE=1M COFFER_RETRIES=10
    "$COFFER" -r "$repo" init --kdf-log-n 10 &&
        "$COFFER" -r "$repo" -q backup "$src" &&
        "$COFFER" -r "$repo" restore latest --target "$dst" >/dev/null &&
        diff -r "$src" "$dst$src" &&
        "$COFFER" -r "$repo" check --read-data
    local rc=$?
    unset COFFER_AZURE_BLOCK_THRESHOLD COFFER_AZURE_BLOCK_SIZE COFFER_RETRIES
    rl_info "fault proxy: $(curl -sS --max-time 5 "http://127.0.0.1:$pport/__faultproxy/stats" 2>/dev/null | tr -d '\n' | cut -c1-200)"
    rl_stop_pid "$pid"
    return $rc
}

secs() { python3 -c "import sys; t=float(sys.argv[2])-float(sys.argv[1]); print('%.2f s, %.0f MiB/s' % (t, 100/t))" "$1" "$2"; }

bench() {
    local repo="azure:$ENDPOINT/coffer/bench" src="$RL_TMP/bench" t0 t1
    mkdir -p "$src"
    head -c $((100 * 1048576)) /dev/urandom >"$src/random.bin"
    "$COFFER" -r "$repo" init --kdf-log-n 10 >/dev/null || return 1
    t0=$(date +%s.%N)
    "$COFFER" -r "$repo" -q backup "$src" || return 1
    t1=$(date +%s.%N)
    rl_info "100 MiB backup to azurite: $(secs "$t0" "$t1")"
    t0=$(date +%s.%N)
    "$COFFER" -r "$repo" restore latest --target "$RL_TMP/bench-restore" >/dev/null || return 1
    t1=$(date +%s.%N)
    rl_info "100 MiB restore from azurite: $(secs "$t0" "$t1")"
    cmp "$src/random.bin" "$RL_TMP/bench-restore$src/random.bin"
}

rl_case "conformance suite (azure:$ENDPOINT/coffer/prefix)" conformance
rl_case "conformance suite, block uploads (1 MiB blocks), pages of 7, tier Cool" conformance_blocks
rl_case "conformance suite, repository at the container root" conformance_root
rl_case "conformance suite with a SAS token (no key), never printed" conformance_sas
rl_case "round trip: init, 2 backups of ~30 MB, restore, diff, check --read-data, forget --prune" roundtrip
rl_case "wrong key: exit 15 with the server's error, nothing written, key not printed" wrong_key
rl_case "read-only SAS: reads work, writes refused (exit 15), token not printed" readonly_sas
rl_case "credentials (account key, SAS token) never in outputs, cache or temp files" leaks
SC_COFFER=$COFFER SC_TMP=$RL_TMP SC_REPO="azure:$ENDPOINT/coffer/e2e" SC_STORED=az_stored
az_nlocks() { az_listing coffer e2e/locks/ | grep -c .; }
SC_NLOCKS=az_nlocks
SC_SECRETS=("$AZ_KEY")
sc_scenario rl_case
rl_case "missing container: exit 10 (no repository), nothing created" missing_container
rl_case "no, mismatched or malformed credentials: clear errors" no_credentials
rl_case "through a fault proxy (10% faults, block uploads): backup, restore, check --read-data" faults
if [[ "${COFFER_AZURE_BENCH:-0}" == 1 ]]; then
    rl_case "benchmark: 100 MiB backup and restore" bench
fi
rl_case "emulator down: clean failure after the retries" emulator_down
rl_finish
