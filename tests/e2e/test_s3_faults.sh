#!/usr/bin/env bash
# test_s3_faults.sh - the S3 driver through a fault-injecting proxy (tests/tools/faultproxy.py)
# in front of a real S3 server (@20minutes/s3rver): at a 10% fault rate (dropped connections,
# delays, 500/503/429 answers, truncated and stalled bodies, requests applied but answered
# with an error) a ~50 MB backup, a bit-identical restore and check --read-data all succeed;
# then the server dies in the middle of a backup, which must fail cleanly and publish no
# snapshot, and the repository must still check clean and take the next backup. Last, with
# read-only credentials (a second proxy answers every write 403 AccessDenied), restore and
# check work without a lock and say so, while backup and prune fail with exit 15 and change
# nothing.
#
# Exit 77 (skipped) when node/npm/python3 or the server is unavailable, unless
# COFFER_REQUIRE_DRIVERS names s3 (then exit 1). COFFER_FAULT_SEED changes the fault pattern.
. "$(dirname "${BASH_SOURCE[0]}")/../conformance/remote/lib.sh"
rl_init s3

COFFER="${COFFER_BIN:-$RL_ROOT/build/dev/coffer}"
if [[ ! -x "$COFFER" ]]; then
    echo "FAIL - coffer binary not found at $COFFER (build it, or set COFFER_BIN)"
    echo "0 passed, 1 failed"
    exit 1
fi
command -v python3 >/dev/null 2>&1 || rl_unavailable "python3 is not installed"

DATA="$RL_TMP/s3data"
rl_s3rver_start "$DATA" || rl_unavailable "$RL_S3_WHY"
SEED="${COFFER_FAULT_SEED:-20261122}"
PPORT=$(rl_free_port $((S3_PORT + 1))) || rl_unavailable "no free port for the proxy"
PROXY_LOG="$RL_TMP/proxy.log"
rl_bg "$PROXY_LOG" python3 "$RL_ROOT/tests/tools/faultproxy.py" --upstream "127.0.0.1:$S3_PORT" \
    --port "$PPORT" --rate 0.10 --seed "$SEED" --delay-max 1.5 --stall 8 --emulate-conditional
PROXY_PID=$RL_PID
rl_wait_for 20 grep -q listening "$PROXY_LOG" || rl_unavailable "the fault proxy did not start: $(tail -3 "$PROXY_LOG")"
rl_info "s3rver on 127.0.0.1:$S3_PORT, fault proxy on 127.0.0.1:$PPORT (rate 10%, seed $SEED)"

rl_s3_env
export LC_ALL=C
export COFFER_PASSWORD="s3-faults-password"
# Stalls of 8 s must trip the low-speed timeout (3 s: long enough for a busy machine's
# server to answer a large upload); packs (16 MiB) go up in 5 MiB parts, so parts and
# completions meet faults too.
export COFFER_HTTP_LOW_SPEED_TIME=3 COFFER_S3_MULTIPART_THRESHOLD=8M COFFER_S3_PART_SIZE=5M
REPO="s3:http://127.0.0.1:$PPORT/bucket/faults"
SRC="$RL_TMP/src"

proxy() {
    curl -sS --max-time 10 "http://127.0.0.1:$PPORT/__faultproxy/$1"
}

snapshot_count() {
    "$COFFER" -r "$REPO" --json snapshots | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'
}

backup_through_faults() {
    rl_gen_tree "$SRC" 50
    "$COFFER" -r "$REPO" init --kdf-log-n 10 || return 1
    "$COFFER" -r "$REPO" backup "$SRC" || return 1
    [[ "$(snapshot_count)" == 1 ]]
}

restore_through_faults() {
    "$COFFER" -r "$REPO" restore latest --target "$RL_TMP/restore" || return 1
    diff -r "$SRC" "$RL_TMP/restore$SRC" || { echo "restored tree differs"; return 1; }
    cmp "$SRC/nested/a/b/c/blob1.bin" "$RL_TMP/restore$SRC/nested/a/b/c/blob1.bin"
}

check_through_faults() {
    "$COFFER" -r "$REPO" check --read-data
}

faults_were_injected() {
    local stats
    stats=$(proxy stats) || return 1
    echo "$stats"
    rl_info "faults injected: $stats"
    python3 -c '
import json, sys
s = json.loads(sys.argv[1])
kinds = [k for k in ("drop", "drop-after", "delay", "error", "error-after", "truncate", "stall") if s.get(k, 0) > 0]
total = sum(s.get(k, 0) for k in kinds)
print("total", total, "kinds", kinds)
sys.exit(0 if total >= 8 and len(kinds) >= 4 else 1)
' "$stats"
}

server_dies_mid_backup() {
    local n0 marker bpid rc=0 err="$RL_TMP/dying.err" i
    proxy "set?rate=0&delay_all=0.15" >/dev/null || return 1
    n0=$(snapshot_count) || return 1
    mkdir -p "$RL_TMP/src2"
    head -c $((64 * 1048576)) /dev/urandom >"$RL_TMP/src2/new.bin"
    marker="$RL_TMP/marker"
    touch "$marker"
    sleep 1
    COFFER_RETRIES=4 "$COFFER" -r "$REPO" backup "$RL_TMP/src2" >"$RL_TMP/dying.out" 2>"$err" &
    bpid=$!
    # stop the server as soon as the backup has stored its first new pack
    for ((i = 0; i < 600; i++)); do
        if [[ -n "$(find "$DATA/bucket/faults/data" -newer "$marker" -name '*_S3rver_object' 2>/dev/null | head -1)" ]]; then
            break
        fi
        kill -0 "$bpid" 2>/dev/null || break
        sleep 0.05
    done
    rl_s3rver_stop
    wait "$bpid" || rc=$?
    cat "$err"
    rl_clean_failure "$rc" "$err" || return 1
    grep -qE 'gave up after|502' "$err" || { echo "no clear error"; return 1; }
    # the server comes back with the same data
    rl_s3rver_start "$DATA" "$S3_PORT" || { echo "restart failed: $RL_S3_WHY"; return 1; }
    proxy "set?delay_all=0" >/dev/null
    local n1
    n1=$(snapshot_count) || return 1
    [[ "$n1" == "$n0" ]] || { echo "snapshots: $n0 before, $n1 after the failed backup"; return 1; }
    "$COFFER" -r "$REPO" check || { echo "check failed after the interrupted backup"; return 1; }
    # the next backup goes through (a stale lock of the dead process may need unlocking)
    if ! "$COFFER" -r "$REPO" backup "$RL_TMP/src2" >"$RL_TMP/next.out" 2>&1; then
        cat "$RL_TMP/next.out"
        "$COFFER" -r "$REPO" unlock || return 1
        "$COFFER" -r "$REPO" backup "$RL_TMP/src2" || return 1
    fi
    [[ "$(snapshot_count)" == $((n0 + 1)) ]] || return 1
    "$COFFER" -r "$REPO" restore latest --target "$RL_TMP/restore2" || return 1
    cmp "$RL_TMP/src2/new.bin" "$RL_TMP/restore2$RL_TMP/src2/new.bin"
}

read_only_credentials() {
    local rport rlog ro n0 rc
    rport=$(rl_free_port $((PPORT + 1))) || return 1
    rlog="$RL_TMP/ro-proxy.log"
    rl_bg "$rlog" python3 "$RL_ROOT/tests/tools/faultproxy.py" --upstream "127.0.0.1:$S3_PORT" \
        --port "$rport" --rate 1 --kinds deny --only '^(PUT|POST|DELETE) '
    local ro_pid=$RL_PID
    rl_wait_for 20 grep -q listening "$rlog" || { echo "read-only proxy did not start"; return 1; }
    ro="s3:http://127.0.0.1:$rport/bucket/faults"
    n0=$(snapshot_count) || return 1
    locks() { find "$DATA/bucket/faults/locks" -name '*_S3rver_object' 2>/dev/null | sort; }
    locks >"$RL_TMP/locks.before"
    "$COFFER" -r "$ro" restore latest --target "$RL_TMP/ro-restore" 2>"$RL_TMP/ro.err" || { cat "$RL_TMP/ro.err"; return 1; }
    grep -q "reading without a lock" "$RL_TMP/ro.err" || { echo "no warning about the missing lock"; cat "$RL_TMP/ro.err"; return 1; }
    cmp "$RL_TMP/src2/new.bin" "$RL_TMP/ro-restore$RL_TMP/src2/new.bin" || return 1
    "$COFFER" -r "$ro" check 2>"$RL_TMP/ro.err" || { cat "$RL_TMP/ro.err"; return 1; }
    rc=0
    "$COFFER" -r "$ro" backup "$RL_TMP/src2" 2>"$RL_TMP/ro.err" || rc=$?
    [[ $rc == 15 ]] || { echo "backup with read-only credentials exited $rc, not 15"; cat "$RL_TMP/ro.err"; return 1; }
    rc=0
    "$COFFER" -r "$ro" prune 2>"$RL_TMP/ro.err" || rc=$?
    [[ $rc == 15 ]] || { echo "prune with read-only credentials exited $rc, not 15"; cat "$RL_TMP/ro.err"; return 1; }
    rl_stop_pid "$ro_pid"
    [[ "$(snapshot_count)" == "$n0" ]] || { echo "the snapshots changed"; return 1; }
    locks | cmp -s - "$RL_TMP/locks.before" || { echo "the locks changed"; return 1; }
}

rl_case "backup of ~50 MB through 10% faults" backup_through_faults
rl_case "restore through faults is bit-identical" restore_through_faults
rl_case "check --read-data through faults" check_through_faults
rl_case "the proxy injected faults of most kinds" faults_were_injected
rl_case "server dies mid-backup: clean failure, no snapshot, check passes, next backup works" \
    server_dies_mid_backup
rl_case "read-only credentials: restore and check without a lock; backup and prune exit 15" \
    read_only_credentials
rl_stop_pid "$PROXY_PID"
rl_info "proxy: $(grep -c '^fault ' "$PROXY_LOG") faults logged"
rl_finish
