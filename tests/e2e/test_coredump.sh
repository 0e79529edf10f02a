#!/usr/bin/env bash
# Key material never appears in a core dump of a running coffer: a backup reading a slow
# pipe (repository open, packs being built by the worker threads) is dumped with gdb's
# gcore, and, where the kernel writes cores to a plain file, killed with SIGABRT under
# `ulimit -c unlimited`. Each core is searched for the password, the key file's bytes,
# COFFER_KEY, the key bundle (mac, data, index and private keys), the config and chunker
# keys, every slot's key-encryption key and every pack and object key (all printed by the
# test tool tests/tools/cf_keydump.c, derived the way docs/FORMAT.md says), raw, in hex and
# in base64. The repository's path must be in each core: it proves the core is real.
source "$(dirname "$0")/lib.sh" || exit 1

KEYDUMP="$(dirname "${COFFER_BIN:-$ROOT/build/dev/coffer}")/cf_keydump"
REPO="$TMP/repo-for-coredump-$$"
PW="core-pw-$RANDOM$RANDOM$RANDOM"
KHEX=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
head -c 32 /dev/urandom > "$TMP/keyfile" # raw bytes
PWFILE="$TMP/pwfile"
PWF="core-file-pw-$RANDOM$RANDOM$RANDOM"
printf '%s\n' "$PWF" > "$PWFILE"
unset COFFER_PASSWORD
# AddressSanitizer's allocator maps terabytes of address space that a core dump would hold
# (tens of GB on disk), and it changes where memory lives: cores are taken of plain builds
ASAN_BUILD=0
grep -qa "__asan_init" "$COFFER" && ASAN_BUILD=1

setup() {
    [[ -x "$KEYDUMP" ]] || { note "test tool not built: $KEYDUMP"; return 1; }
    expect_exit 0 env COFFER_PASSWORD="$PW" "$COFFER" --repo "$REPO" init --kdf-log-n 10 --pack-size 262144 --chunk-min 16384 --chunk-avg 32768 --chunk-max 65536 || return 1
    expect_exit 0 env COFFER_PASSWORD="$PW" "$COFFER" --repo "$REPO" key add --new-key-file "$TMP/keyfile" || return 1
    expect_exit 0 env COFFER_PASSWORD="$PW" COFFER_NEW_KEY="$KHEX" "$COFFER" --repo "$REPO" key add || return 1
    expect_exit 0 env COFFER_PASSWORD="$PW" "$COFFER" --repo "$REPO" key add --new-password-file "$PWFILE" --kdf-log-n 10 || return 1
}

# search CORE: none of the secrets, in any form, is in CORE; the repository path is.
search() {
    local core=$1
    env COFFER_PASSWORD="$PW" "$KEYDUMP" "$REPO" > "$TMP/keys.txt" || { note "cf_keydump failed"; return 1; }
    python3 - "$core" "$TMP/keys.txt" "$PW" "$PWF" "$KHEX" "$TMP/keyfile" "$REPO" <<'EOF' >"$TMP/search.out" 2>&1
import base64, binascii, sys
core_path, keys_path, pw, pwf, khex, keyfile, repo = sys.argv[1:8]
core = open(core_path, "rb").read()
secrets = [("password", pw.encode()), ("password from the file", pwf.encode()),
           ("COFFER_KEY text", khex.encode())]
raw = open(keyfile, "rb").read()
secrets.append(("key file", raw))
secrets.append(("COFFER_KEY bytes", binascii.unhexlify(khex)))
for line in open(keys_path):
    kind, name, hexkey = line.split()
    secrets.append(("%s %s" % (kind, name[:16]), binascii.unhexlify(hexkey)))
found = []
for what, s in secrets:
    forms = [("raw", s)]
    if len(s) == 32:
        forms += [("hex", binascii.hexlify(s)), ("HEX", binascii.hexlify(s).upper()),
                  ("base64", base64.b64encode(s).rstrip(b"="))]
    for form, b in forms:
        if b in core:
            found.append("%s (%s) at offset %d" % (what, form, core.find(b)))
print("core of %d MiB, %d secrets searched in %s" % (len(core) >> 20, len(secrets), "raw/hex/base64"))
kinds = {}
for what, _ in secrets:
    k = what.split()[0]
    kinds[k] = kinds.get(k, 0) + 1
print("secrets by kind:", kinds)
for f in found:
    print("FOUND", f)
if repo.encode() not in core:
    print("MISSING the repository path: not a real core of coffer")
    sys.exit(1)
sys.exit(1 if found else 0)
EOF
    local rc=$?
    echo "# $(head -n 2 "$TMP/search.out" | tr '\n' ' ')"
    [[ $rc -eq 0 ]] || note "$(cat "$TMP/search.out")"
    return $rc
}

# start_backup NAME ENV...: a backup from a pipe that stays open until release NAME; its pid
# in $BPID once it has stored some packs.
start_backup() {
    local name=$1
    shift
    mkfifo "$TMP/pipe-$name"
    ( head -c 3000000 /dev/urandom; while [[ ! -e "$TMP/release-$name" ]]; do sleep 0.1; done ) > "$TMP/pipe-$name" &
    BG_PIDS+=($!)
    env "$@" "$COFFER" --repo "$REPO" backup --stdin --stdin-name "$name.bin" < "$TMP/pipe-$name" > "$TMP/$name.out" 2>&1 &
    BPID=$!
    local before i
    before=$(find "$REPO/data" -type f ! -name '.tmp*' 2>/dev/null | wc -l)
    for ((i = 0; i < 300; i++)); do
        (( $(find "$REPO/data" -type f ! -name '.tmp*' | wc -l) >= before + 4 )) && break
        kill -0 "$BPID" 2>/dev/null || break
        sleep 0.1
    done
    sleep 0.5
}

finish_backup() {
    touch "$TMP/release-$1"
    local rc=0
    wait "$BPID" || rc=$?
    [[ $rc -eq 0 ]] || note "the dumped backup ($1) failed afterwards (exit $rc): $(tail -n 3 "$TMP/$1.out")"
}

case_gcore() {
    local name=$1
    shift
    if [[ $ASAN_BUILD == 1 ]]; then
        SKIPPED="an AddressSanitizer build: its core would be tens of GB"
        return 0
    fi
    if ! command -v gcore >/dev/null; then
        SKIPPED="gdb's gcore is not installed (scripts/deps.sh installs it)"
        return 0
    fi
    start_backup "$name" "$@"
    kill -0 "$BPID" 2>/dev/null || { note "the backup ended early: $(tail -n 3 "$TMP/$name.out")"; return 1; }
    gcore -o "$TMP/core-$name" "$BPID" > "$TMP/gcore.out" 2>&1
    local core="$TMP/core-$name.$BPID"
    finish_backup "$name"
    [[ -s "$core" ]] || { note "gcore wrote no core: $(tail -n 3 "$TMP/gcore.out")"; return 1; }
    # the keys of the packs that were being built are in storage now: search for them too
    search "$core"
    rm -f "$core"
}

case_kernel_core() {
    local pattern
    if [[ $ASAN_BUILD == 1 ]]; then
        SKIPPED="an AddressSanitizer build: its core would be tens of GB"
        return 0
    fi
    pattern=$(cat /proc/sys/kernel/core_pattern 2>/dev/null)
    if [[ -z "$pattern" || "$pattern" == \|* || "$pattern" == /* ]]; then
        SKIPPED="the kernel's core_pattern is not a plain file name ('$pattern'): not changed here"
        return 0
    fi
    local dir="$TMP/kcore"
    mkdir -p "$dir"
    mkfifo "$TMP/pipe-kernel"
    ( head -c 3000000 /dev/urandom; sleep 600 ) > "$TMP/pipe-kernel" &
    BG_PIDS+=($!)
    local feeder=$! before i
    before=$(find "$REPO/data" -type f ! -name '.tmp*' | wc -l)
    (cd "$dir" && ulimit -c unlimited && exec env COFFER_PASSWORD="$PW" \
        "$COFFER" --repo "$REPO" backup --stdin --stdin-name kernel.bin < "$TMP/pipe-kernel" > "$TMP/kernel.out" 2>&1) &
    BPID=$!
    for ((i = 0; i < 300; i++)); do
        (( $(find "$REPO/data" -type f ! -name '.tmp*' | wc -l) >= before + 4 )) && break
        sleep 0.1
    done
    sleep 0.5
    kill -ABRT "$BPID"
    local rc=0
    { wait "$BPID"; } 2>/dev/null || rc=$?
    kill "$feeder" 2>/dev/null
    local core
    core=$(find "$dir" -maxdepth 1 -type f -name 'core*' | head -n 1)
    if [[ -z "$core" ]]; then
        SKIPPED="no kernel core was written (exit $rc; core_pattern '$pattern', the container may not allow it)"
        return 0
    fi
    search "$core"
}

run_case "set up a repository with a password, a key file, COFFER_KEY and a password file" setup
run_case "gcore of a backup opened with COFFER_PASSWORD holds no secret" case_gcore pwenv COFFER_PASSWORD="$PW"
run_case "gcore of a backup opened with --password-file holds no secret" case_gcore pwfile COFFER_PASSWORD_FILE="$PWFILE"
run_case "gcore of a backup opened with --key-file holds no secret" case_gcore keyfile COFFER_KEY_FILE="$TMP/keyfile"
run_case "gcore of a backup opened with COFFER_KEY holds no secret" case_gcore keyenv COFFER_KEY="$KHEX"
run_case "kernel core (SIGABRT) of a backup holds no secret" case_kernel_core
finish
