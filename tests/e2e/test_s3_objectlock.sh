#!/usr/bin/env bash
# test_s3_objectlock.sh - S3 Object Lock retention, end to end. The S3 test server (s3rver)
# has no Object Lock, so the project's fault proxy (tests/tools/faultproxy.py --object-lock)
# stands in for it: it records the lock headers of every write and answers a DELETE or an
# overwriting PUT of an object under retention with S3's 403 AccessDenied, until the test
# declares the retention period over (/__faultproxy/objectlock/expire).
#
# Checked: every object written (but lock files) carries COMPLIANCE retention of one day and
# an integrity header; forget keeps the snapshots it may not delete (exit 3) and removes the
# others; prune keeps and reports packs and index files under retention (exit 0), the
# repository checks and every kept snapshot restores; a later prune removes them once the
# retention is over; an append-only key is still refused by coffer, and an admin's key
# removal by the storage.
#
# Exit 77 (skipped) when node/npm/python3 or the server is unavailable, unless
# COFFER_REQUIRE_DRIVERS names s3 (then exit 1).
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
PPORT=$(rl_free_port $((S3_PORT + 1))) || rl_unavailable "no free port for the proxy"
PROXY_LOG="$RL_TMP/proxy.log"
rl_bg "$PROXY_LOG" python3 "$RL_ROOT/tests/tools/faultproxy.py" --upstream "127.0.0.1:$S3_PORT" \
    --port "$PPORT" --rate 0 --emulate-conditional --object-lock
PROXY_PID=$RL_PID
rl_wait_for 20 grep -q listening "$PROXY_LOG" || rl_unavailable "the fault proxy did not start: $(tail -3 "$PROXY_LOG")"

rl_s3_env
export LC_ALL=C
export COFFER_PASSWORD="objectlock-admin"
# packs of 2 MiB go up in two 1 MiB parts: multipart uploads carry the lock headers too
export COFFER_S3_MULTIPART_THRESHOLD=1M COFFER_S3_PART_SIZE=1M
REPO="s3:http://127.0.0.1:$PPORT/bucket/olock?object_lock=COMPLIANCE&retain_days=1"
PREFIX="/bucket/olock/"
SRC="$RL_TMP/src"

proxy() {
    curl -sS --max-time 10 "http://127.0.0.1:$PPORT/__faultproxy/$1"
}

c() { "$COFFER" -r "$REPO" "$@"; }
app() { COFFER_PASSWORD=objectlock-append "$COFFER" -r "$REPO" "$@"; }

snapshot_ids() {
    c --json snapshots | python3 -c 'import json,sys; print(" ".join(s["id"] for s in json.load(sys.stdin)))'
}

# expect CODE CMD...: run CMD, output in $RL_TMP/last.out, require exit status CODE
expect() {
    local want=$1 rc=0
    shift
    "$@" >"$RL_TMP/last.out" 2>&1 || rc=$?
    cat "$RL_TMP/last.out"
    if [[ $rc -ne $want ]]; then
        echo "expected exit $want, got $rc: $*"
        return 1
    fi
}

headers_on_every_write() {
    mkdir -p "$SRC/text"
    head -c 5000000 /dev/urandom >"$SRC/a.bin"
    seq 1 50000 >"$SRC/text/numbers"
    expect 0 c init --kdf-log-n 10 --pack-size 2097152 || return 1
    expect 0 env COFFER_NEW_PASSWORD=objectlock-append "$COFFER" -r "$REPO" key add --append-only --kdf-log-n 10 || return 1
    expect 0 c backup "$SRC" || return 1
    cp -a "$SRC" "$RL_TMP/stateA"
    proxy objectlock >"$RL_TMP/lock.json" || return 1
    python3 - "$RL_TMP/lock.json" "$PREFIX" <<'EOF'
import json, sys, time, datetime
j = json.load(open(sys.argv[1]))
prefix = sys.argv[2]
now = time.time()
bad, seen, kinds = [], set(), {}
lock_uploads = set()
for w in j["writes"]:
    if w.get("status", 0) // 100 != 2 or w["kind"] == "delete":
        continue
    rel = w["path"][len(prefix):] if w["path"].startswith(prefix) else w["path"]
    kinds[w["kind"]] = kinds.get(w["kind"], 0) + 1
    top = rel.split("/")[0]
    if w["kind"] in ("put", "create"):
        if top == "locks" or top.startswith(".tmp-"):
            if w["mode"]:
                bad.append("lock file or probe with retention: %s" % rel)
            continue
        seen.add(top)
        if w["mode"] != "COMPLIANCE":
            bad.append("%s %s: mode %r" % (w["kind"], rel, w["mode"]))
            continue
        until = datetime.datetime.strptime(w["until"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        if not (now + 86400 - 1800 < until < now + 86400 + 60):
            bad.append("%s %s: retain until %s is not one day ahead" % (w["kind"], rel, w["until"]))
        if w["kind"] == "put" and not (w["content_md5"] or w["checksum"]):
            bad.append("put %s: no Content-MD5 or x-amz-checksum" % rel)
        if w["kind"] == "create":
            lock_uploads.add(w["path"])
    if w["kind"] == "part" and w["path"] in lock_uploads and not (w["content_md5"] or w["checksum"]):
        bad.append("part of %s: no Content-MD5 or x-amz-checksum" % rel)
print("writes by kind:", kinds, "locked prefixes:", sorted(seen))
for want in ("config", "keys", "data", "index", "snapshots"):
    if want not in seen:
        bad.append("no locked write under %s" % want)
if not kinds.get("create") or not kinds.get("part"):
    bad.append("no multipart upload was seen")
if not any(w["path"].startswith(prefix + "locks/") for w in j["writes"]):
    bad.append("no lock file was written")
for b in bad[:20]:
    print("BAD", b)
sys.exit(1 if bad else 0)
EOF
}

deletes_refused() {
    local n0 other
    # append-only: coffer refuses before the storage is asked
    local admin_id
    admin_id=$(app --json key list | python3 -c 'import json,sys; print([k["id"] for k in json.load(sys.stdin) if k["role"]=="admin"][0])')
    expect 1 app key remove "$admin_id" || return 1
    grep -q "append-only" "$RL_TMP/last.out" || { echo "refusal does not name the append-only key"; return 1; }
    # it may add a snapshot (so that there is one to forget), not remove one
    expect 0 app backup "$SRC" || return 1
    expect 1 app forget --keep-last 1 || return 1
    grep -q "append-only" "$RL_TMP/last.out" || { echo "forget refusal does not name the key"; return 1; }
    expect 1 app prune || return 1
    # an admin's removal of a key slot under retention: the storage refuses
    expect 0 env COFFER_NEW_PASSWORD=objectlock-second "$COFFER" -r "$REPO" key add --kdf-log-n 10 || return 1
    n0=$(c --json key list | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
    other=$(c --json key list | python3 -c 'import json,sys; print([k["id"] for k in json.load(sys.stdin) if not k["current"] and k["role"]=="admin"][0])')
    expect 1 c key remove "$other" || return 1
    grep -q "Object Lock retention" "$RL_TMP/last.out" || { echo "the refusal does not say why"; return 1; }
    [[ "$(c --json key list | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" == "$n0" ]] ||
        { echo "a key slot under retention went away"; return 1; }
    local refused
    refused=$(proxy stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["lock_refused"])')
    echo "refusals by the proxy so far: $refused"
    [[ "$refused" -ge 1 ]]
}

forget_prune_under_retention() {
    # snapshot A's retention period is over; B and C are under retention
    proxy objectlock/expire || return 1
    rm "$SRC/a.bin"
    head -c 3000000 /dev/urandom >"$SRC/b.bin"
    expect 0 c backup "$SRC" || return 1
    cp -a "$SRC" "$RL_TMP/stateB"
    rm "$SRC/b.bin"
    head -c 3000000 /dev/urandom >"$SRC/c.bin"
    expect 0 c backup "$SRC" || return 1
    cp -a "$SRC" "$RL_TMP/stateC"
    expect 3 c forget --keep-last 1 || return 1
    grep -q "1 snapshots were kept" "$RL_TMP/last.out" || { echo "forget does not report the kept snapshot"; return 1; }
    local ids
    ids=$(snapshot_ids)
    [[ $(wc -w <<<"$ids") == 2 ]] || { echo "expected B and C to remain: $ids"; return 1; }

    # a backup killed after storing packs leaves packs under retention that nothing uses
    mkdir -p "$RL_TMP/src2"
    head -c 12000000 /dev/urandom >"$RL_TMP/src2/big.bin"
    proxy "set?delay_all=0.2" >/dev/null || return 1
    local nw0 bpid i
    nw0=$(proxy objectlock | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["writes"]))')
    "$COFFER" -r "$REPO" backup "$RL_TMP/src2" >"$RL_TMP/killed.out" 2>&1 &
    bpid=$!
    for ((i = 0; i < 600; i++)); do
        if proxy objectlock | python3 -c '
import json, sys
w = json.load(sys.stdin)["writes"][int(sys.argv[1]):]
sys.exit(0 if any("/data/" in x["path"] and x["kind"] in ("put", "complete") and x.get("status") == 200 for x in w) else 1)' "$nw0"; then
            break
        fi
        sleep 0.1
    done
    kill -9 "$bpid" 2>/dev/null
    wait "$bpid" 2>/dev/null
    proxy "set?delay_all=0" >/dev/null

    expect 0 c prune || return 1
    grep -q "kept pack" "$RL_TMP/last.out" || { echo "prune does not name the packs it kept"; return 1; }
    grep -q "packs are under retention and were kept" "$RL_TMP/last.out" || { echo "no summary of kept packs"; return 1; }
    grep -q "kept index file" "$RL_TMP/last.out" || { echo "prune does not name the index files it kept"; return 1; }
    # snapshot A's own data (a.bin), out of retention, is gone
    proxy objectlock >"$RL_TMP/lock2.json"
    python3 -c '
import json, sys
w = json.load(open(sys.argv[1]))["writes"]
d = [x for x in w if x["kind"] == "delete" and "/data/" in x["path"]]
ok = [x for x in d if x.get("status") in (200, 204)]
refused = [x for x in d if x.get("status") == 403]
print("pack deletes: %d done, %d refused" % (len(ok), len(refused)))
sys.exit(0 if ok and refused else 1)' "$RL_TMP/lock2.json" || return 1
    expect 0 c check --read-data || return 1
    local id n=0
    for id in $(c --json snapshots | python3 -c 'import json,sys; print(" ".join(s["id"] for s in sorted(json.load(sys.stdin), key=lambda s: s["time"])))'); do
        n=$((n + 1))
        local want=$([[ $n == 1 ]] && echo stateB || echo stateC)
        expect 0 c restore "$id" --target "$RL_TMP/r$n" || return 1
        diff -r "$RL_TMP/$want" "$RL_TMP/r$n$SRC" || { echo "snapshot $n does not restore bit-identical"; return 1; }
    done
    [[ $n == 2 ]] || { echo "restored $n snapshots, expected 2"; return 1; }
}

later_prune_after_retention() {
    local before after
    proxy objectlock/expire || return 1
    expect 0 c forget --keep-last 1 || return 1
    expect 0 c --json prune || return 1
    python3 -c '
import json, sys
j = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print(j)
sys.exit(0 if j["packs_locked"] == 0 and j["packs_deleted"] >= 1 else 1)' "$RL_TMP/last.out" || return 1
    expect 0 c check --read-data || return 1
    expect 0 c restore latest --target "$RL_TMP/final" || return 1
    diff -r "$RL_TMP/stateC" "$RL_TMP/final$SRC"
}

rl_case "every object written carries Object Lock retention and an integrity header" headers_on_every_write
rl_case "deletes are refused: by coffer for an append-only key, by the storage under retention" deletes_refused
rl_case "forget and prune under retention: locked objects kept and reported, repository intact" \
    forget_prune_under_retention
rl_case "once the retention is over, a later forget and prune remove what was kept" \
    later_prune_after_retention
rl_stop_pid "$PROXY_PID"
rl_finish
