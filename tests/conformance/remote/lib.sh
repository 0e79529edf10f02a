# lib.sh - shared helpers for scripts that run coffer against real servers on 127.0.0.1
# (tests/conformance/remote/*.sh, tests/e2e/test_s3_*.sh): a scratch directory, free ports,
# waiting, cleanup of servers and temporaries on exit, the skip-or-require rule, npm package
# caching, pass/fail counters, and the S3 test server (@20minutes/s3rver).
#
# Source it:   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"; rl_init DRIVER
#
# Environment:
#   COFFER_REQUIRE_DRIVERS  drivers ("s3,sftp" or "s3 sftp") whose server must start: when it
#                           cannot, the script fails (exit 1) instead of skipping (exit 77)
#   COFFER_TEST_CACHE       where npm packages are installed and reused between runs
#                           (default /tmp/coffer-test-cache; never inside the repository)
#   CONFORMANCE_BIN, COFFER_BIN   the binaries under test (set by CTest)
#   RL_VERBOSE=1            show every case's output, not only the failing ones

set -u -o pipefail

RL_ROOT="${COFFER_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}"
RL_CACHE="${COFFER_TEST_CACHE:-/tmp/coffer-test-cache}"
RL_DRIVER=""
RL_TMP=""
RL_PASSED=0
RL_FAILED=0
RL_CLEANUPS=()
RL_PIDS=()

# rl_init DRIVER: a scratch directory ($RL_TMP) and the exit trap.
rl_init() {
    RL_DRIVER=$1
    RL_TMP="$(mktemp -d "${TMPDIR:-/tmp}/coffer-remote-$1.XXXXXX")"
    chmod 0755 "$RL_TMP"
    trap _rl_exit EXIT
    trap 'exit 130' INT TERM
}

# rl_on_exit CMD...: run CMD (a string, eval'd) when the script exits, newest first.
rl_on_exit() {
    RL_CLEANUPS+=("$*")
}

_rl_exit() {
    local rc=$? i p
    set +e # a failing cleanup step must not stop the others (set -e survives into traps)
    for ((i = ${#RL_CLEANUPS[@]} - 1; i >= 0; i--)); do
        eval "${RL_CLEANUPS[$i]}" >/dev/null 2>&1
    done
    for p in "${RL_PIDS[@]}"; do
        rl_stop_pid "$p"
    done
    if [[ -n "$RL_TMP" && -d "$RL_TMP" ]]; then
        chmod -R u+rwX "$RL_TMP" 2>/dev/null
        rm -rf "$RL_TMP"
    fi
    exit "$rc"
}

# rl_bg LOGFILE CMD...: start CMD in the background with output to LOGFILE; its pid is in
# $RL_PID and it is stopped at exit.
rl_bg() {
    local log=$1
    shift
    "$@" >"$log" 2>&1 </dev/null &
    RL_PID=$!
    RL_PIDS+=("$RL_PID")
}

# rl_stop_pid PID: TERM, then KILL after 5 s; reaps it. Only for processes this script started.
rl_stop_pid() {
    local p=$1 i
    kill -0 "$p" 2>/dev/null || { wait "$p" 2>/dev/null; return 0; }
    kill -TERM "$p" 2>/dev/null
    for ((i = 0; i < 50; i++)); do
        kill -0 "$p" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
    return 0
}

# rl_port_free PORT: nothing listens on 127.0.0.1:PORT.
rl_port_free() {
    if command -v ss >/dev/null 2>&1; then
        ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
    else
        ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

# rl_free_port [START]: print the first free TCP port from START (default: a spread from the
# pid, so parallel runs rarely collide).
rl_free_port() {
    local p=${1:-$((20000 + ($$ * 7) % 20000))} tries
    for ((tries = 0; tries < 500; tries++)); do
        if rl_port_free "$p"; then
            echo "$p"
            return 0
        fi
        p=$((p + 1))
    done
    return 1
}

# rl_wait_port PORT [SECONDS]: wait until something accepts connections on 127.0.0.1:PORT.
rl_wait_port() {
    local port=$1 secs=${2:-30} i
    for ((i = 0; i < secs * 10; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# rl_wait_for SECONDS CMD...: run CMD every 0.1 s until it succeeds.
rl_wait_for() {
    local secs=$1 i
    shift
    for ((i = 0; i < secs * 10; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

# rl_required: is this script's driver listed in COFFER_REQUIRE_DRIVERS?
rl_required() {
    local list=" ${COFFER_REQUIRE_DRIVERS:-} "
    list=${list//,/ }
    [[ "$list" == *" $RL_DRIVER "* || "$list" == *" all "* ]]
}

# rl_unavailable REASON: the server cannot be set up here: skip (77), or fail (1) when the
# driver is required.
rl_unavailable() {
    if rl_required; then
        echo "FAIL - $RL_DRIVER server unavailable: $1 (required by COFFER_REQUIRE_DRIVERS)"
        echo "0 passed, 1 failed"
        exit 1
    fi
    echo "skip - $RL_DRIVER server unavailable: $1"
    exit 77
}

# rl_npm_install NAME@VERSION: install an npm package into $RL_CACHE/npm-<slug> unless it is
# there already; prints the node_modules directory of the package.
rl_npm_install() {
    local spec=$1 name slug dir
    name=${spec%@*}
    slug=$(printf '%s' "$spec" | tr -c 'A-Za-z0-9.-' '_')
    dir="$RL_CACHE/npm-$slug"
    if [[ ! -f "$dir/node_modules/$name/package.json" ]]; then
        command -v npm >/dev/null 2>&1 || return 1
        mkdir -p "$dir" || return 1
        # a lock, so parallel test runs do not install into the same directory at once
        (
            flock -w 600 9 || exit 1
            [[ -f "$dir/node_modules/$name/package.json" ]] && exit 0
            npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "$spec" \
                </dev/null >"$dir/install.log" 2>&1
        ) 9>"$dir.lock" || return 1
    fi
    [[ -f "$dir/node_modules/$name/package.json" ]] || return 1
    echo "$dir/node_modules/$name"
}

# ---- results ----

rl_ok() {
    RL_PASSED=$((RL_PASSED + 1))
    printf 'ok   - %s\n' "$1"
}

rl_fail() {
    RL_FAILED=$((RL_FAILED + 1))
    printf 'FAIL - %s\n' "$1"
    if [[ $# -gt 1 && -n "$2" ]]; then
        printf '%s\n' "$2" | tail -n 25 | cut -c1-300 | sed 's/^/       /'
    fi
}

rl_info() {
    printf 'info - %s\n' "$*"
}

# rl_case NAME FUNC [ARGS...]: FUNC's output goes to a log shown only when it fails.
rl_case() {
    local name=$1 log rc=0
    shift
    log="$RL_TMP/case-$RL_PASSED-$RL_FAILED.log"
    "$@" >"$log" 2>&1 || rc=$?
    if [[ "${RL_VERBOSE:-0}" == 1 ]]; then
        sed 's/^/    | /' "$log"
    fi
    if [[ $rc -eq 0 ]]; then
        rl_ok "$name"
        grep -a '^info - ' "$log" || true
    else
        rl_fail "$name" "$(cat "$log")"
    fi
}

# rl_clean_failure RC FILE: a command failed the way it should: a non-zero exit below 128 (no
# signal) and no sanitizer report in its output FILE.
rl_clean_failure() {
    local rc=$1 file=$2
    if [[ $rc -eq 0 || $rc -ge 128 ]]; then
        echo "expected a clean failure, got exit $rc"
        return 1
    fi
    if grep -aqE 'AddressSanitizer|UndefinedBehaviorSanitizer|LeakSanitizer|ThreadSanitizer|runtime error:' "$file"; then
        echo "sanitizer report:"
        cat "$file"
        return 1
    fi
    return 0
}

rl_finish() {
    printf '%d passed, %d failed\n' "$RL_PASSED" "$RL_FAILED"
    [[ $RL_FAILED -eq 0 ]]
    exit $?
}

# ---- the S3 test server ----

RL_S3RVER_PKG="@20minutes/s3rver@4.0.4"
RL_S3_KEY="S3RVER" # the server's built-in account
RL_S3_SECRET="S3RVER"
RL_S3_KEY2="COFFERTESTKEY2"
RL_S3_SECRET2="k9Zq3s3cr3tLeakCanary+xV7wPq/2mNbT4cR8yH1jD6fL0aS"

# rl_s3rver_start DATA_DIR [PORT]: install (once) and start @20minutes/s3rver on 127.0.0.1,
# storing objects under DATA_DIR; waits until it answers. Sets S3_PORT, S3_PID, S3_LOG.
# --openssl-legacy-provider: its ListObjectsV2 continuation tokens use DES, which OpenSSL 3
# only has in the legacy provider (otherwise every truncated listing is a 500).
# Besides its built-in account, the server accepts the key pair RL_S3_KEY2 / RL_S3_SECRET2
# (distinctive strings, so tests can look for the secret in output). RL_S3_LAX=1 starts it
# with allowMismatchedSignatures, for clients whose bucket-level requests it mis-verifies
# (restic's minio-go; see shared/research/components.md): only for benchmarks.
rl_s3rver_start() {
    local data=$1 port=${2:-} mod
    command -v node >/dev/null 2>&1 || { RL_S3_WHY="node is not installed"; return 1; }
    if ! mod=$(rl_npm_install "$RL_S3RVER_PKG"); then
        RL_S3_WHY="npm install $RL_S3RVER_PKG failed (see $RL_CACHE)"
        return 1
    fi
    [[ -n "$port" ]] || port=$(rl_free_port) || { RL_S3_WHY="no free port"; return 1; }
    mkdir -p "$data"
    S3_LOG="$RL_TMP/s3rver-$port.log"
    rl_bg "$S3_LOG" env RL_S3_KEY2="$RL_S3_KEY2" RL_S3_SECRET2="$RL_S3_SECRET2" \
        RL_S3_LAX="${RL_S3_LAX:-0}" node --openssl-legacy-provider -e '
const S3rver = require(process.argv[1]);
require(process.argv[1] + "/lib/models/account").DUMMY_ACCOUNT.createKeyPair(
  process.env.RL_S3_KEY2, process.env.RL_S3_SECRET2);
new S3rver({ address: "127.0.0.1", port: +process.argv[2], directory: process.argv[3],
             silent: true, allowMismatchedSignatures: process.env.RL_S3_LAX === "1" })
  .run().then(({ address, port }) => console.log("listening", address, port))
  .catch((e) => { console.error(e); process.exit(1); });
process.on("SIGTERM", () => process.exit(0));
' "$mod" "$port" "$data"
    S3_PID=$RL_PID
    S3_PORT=$port
    if ! rl_wait_for 30 grep -q listening "$S3_LOG"; then
        RL_S3_WHY="s3rver did not start: $(tail -n 5 "$S3_LOG" 2>/dev/null | tr '\n' ' ')"
        rl_stop_pid "$S3_PID"
        return 1
    fi
    return 0
}

# rl_s3rver_stop: stop the server started last.
rl_s3rver_stop() {
    [[ -n "${S3_PID:-}" ]] && rl_stop_pid "$S3_PID"
    S3_PID=""
}

# rl_s3_env: the S3 test server's credentials, and nothing from the caller's AWS setup.
rl_s3_env() {
    unset AWS_SESSION_TOKEN AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SHARED_CREDENTIALS_FILE \
        AWS_CONFIG_FILE AWS_DEFAULT_REGION COFFER_S3_STORAGE_CLASS COFFER_S3_CONDITIONAL_PUT \
        COFFER_S3_MULTIPART_THRESHOLD COFFER_S3_PART_SIZE COFFER_INSECURE_TLS
    export AWS_ACCESS_KEY_ID=$RL_S3_KEY AWS_SECRET_ACCESS_KEY=$RL_S3_SECRET AWS_REGION=us-east-1
}

# rl_gen_tree DIR MIB: a tree of about MIB MiB: random (incompressible) files of various sizes,
# compressible text, small files, an empty file, nested folders.
rl_gen_tree() {
    local dir=$1 mib=$2 i left sz
    mkdir -p "$dir/small" "$dir/nested/a/b/c" "$dir/text"
    : >"$dir/empty"
    for i in $(seq 1 40); do
        head -c $((i * 97)) /dev/urandom >"$dir/small/f$i"
    done
    for i in $(seq 1 20); do
        seq $((i * 1000)) $((i * 1000 + 3000)) >"$dir/text/t$i.txt"
    done
    left=$mib
    i=0
    while ((left > 0)); do
        sz=$((left < 7 ? left : 7))
        i=$((i + 1))
        head -c $((sz * 1048576 - i * 4099)) /dev/urandom >"$dir/nested/a/b/c/blob$i.bin"
        left=$((left - sz))
    done
}
