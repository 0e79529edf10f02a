# lib.sh - shared helpers for the end-to-end tests: a scratch directory, the coffer binary,
# pass/fail counters, exit-code assertions and a tree comparator (content and metadata).
#
# Source it from a test script:   . "$(dirname "$0")/lib.sh"
# Each script runs its cases with run_case, printing one line per case, then calls finish.

set -u -o pipefail

ROOT="${COFFER_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
COFFER="${COFFER_BIN:-$ROOT/build/dev/coffer}"
for _try in 1 2 3 4 5 6 7 8 9 10; do
    [[ -x "$COFFER" ]] && break
    sleep 1 # perhaps being relinked right now
done
if [[ ! -x "$COFFER" ]]; then
    echo "coffer binary not found at '$COFFER' (build it, or set COFFER_BIN)" >&2
    exit 1
fi
case "$COFFER" in /*) ;; *) COFFER="$PWD/$COFFER" ;; esac

TMP="$(mktemp -d "${TMPDIR:-/tmp}/coffer-e2e.XXXXXX")"
chmod 0755 "$TMP"
# run a private copy, so that a rebuild during the run does not swap the binary under the test
mkdir "$TMP/bin"
for _try in 1 2 3 4 5 6 7 8 9 10; do
    if cp "$COFFER" "$TMP/bin/coffer" 2>/dev/null && chmod 0755 "$TMP/bin/coffer" &&
        "$TMP/bin/coffer" version >/dev/null 2>&1; then
        COFFER="$TMP/bin/coffer"
        break
    fi
    sleep 1
done
unset _try
BG_PIDS=()
MOUNTS=()

_cleanup() {
    local p
    for p in "${BG_PIDS[@]}"; do
        kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    for p in "${MOUNTS[@]}"; do
        umount "$p" 2>/dev/null || umount -l "$p" 2>/dev/null
    done
    # restored trees may contain read-only directories: make them removable first
    chmod -R u+rwX "$TMP" 2>/dev/null
    rm -rf "$TMP"
}
trap _cleanup EXIT
trap 'exit 130' INT TERM

export COFFER_PASSWORD="e2e-correct-horse"
unset COFFER_REPO COFFER_PASSWORD_FILE COFFER_PASSWORD_COMMAND
export LC_ALL=C
KDF="--kdf-log-n 10"

PASSED=0
FAILED=0
CASE_ERRS=""
SKIPPED=""

ok() {
    PASSED=$((PASSED + 1))
    printf 'ok   - %s\n' "$1"
}

# fail NAME [DETAILS]: one line on stdout; the details, indented, on stderr.
fail() {
    FAILED=$((FAILED + 1))
    printf 'FAIL - %s\n' "$1"
    if [[ $# -gt 1 && -n "$2" ]]; then
        printf '%s\n' "$2" | sed 's/^/       /' >&2
    fi
}

# note MSG: record a failed assertion in the current case (the case goes on).
note() {
    CASE_ERRS+="$1"$'\n'
}

# check DESC CMD...: run CMD quietly; record DESC as a failure if it fails. Returns CMD's status.
check() {
    local desc=$1
    shift
    if "$@" >/dev/null 2>&1; then
        return 0
    fi
    note "$desc"
    return 1
}

# run_case NAME FUNC [ARGS...]: run one case; it fails if FUNC returns non-zero or noted errors.
# A case that cannot run here sets SKIPPED="reason" and returns 0.
run_case() {
    local name=$1
    shift
    CASE_ERRS=""
    SKIPPED=""
    local rc=0
    "$@" || rc=$?
    if [[ $rc -eq 0 && -z "$CASE_ERRS" && -n "$SKIPPED" ]]; then
        skip "$name" "$SKIPPED"
    elif [[ $rc -eq 0 && -z "$CASE_ERRS" ]]; then
        ok "$name"
    else
        [[ -z "$CASE_ERRS" ]] && CASE_ERRS="case returned $rc"
        fail "$name" "${CASE_ERRS%$'\n'}"
    fi
}

# skip NAME REASON: a case that cannot run here; counted neither passed nor failed.
skip() {
    printf 'skip - %s: %s\n' "$1" "$2"
}

finish() {
    printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
    [[ $FAILED -eq 0 ]]
    exit $?
}

# Last command's results, set by run / run_in / expect_exit.
RC=0
OUT="$TMP/.last.out"
ERR="$TMP/.last.err"

_crashed() {
    # a signal death or a sanitizer report is never an acceptable outcome
    [[ $RC -ge 128 ]] && return 0
    grep -aqE 'AddressSanitizer|UndefinedBehaviorSanitizer|LeakSanitizer|ThreadSanitizer|runtime error:' \
        "$OUT" "$ERR" 2>/dev/null
}

_tail_output() {
    {
        tail -n 5 "$OUT"
        tail -n 8 "$ERR"
    } 2>/dev/null | cut -c1-300 | sed 's/^/  | /'
}

# run CMD...: run a command capturing stdout in $OUT, stderr in $ERR, status in $RC.
run() {
    RC=0
    "$@" >"$OUT" 2>"$ERR" </dev/null || RC=$?
    _debug_show "$@"
}

# E2E_DEBUG=1 shows every command run through run/expect_exit with its output, on stderr.
_debug_show() {
    [[ "${E2E_DEBUG:-0}" == 1 ]] || return 0
    {
        printf '  $ %s  => exit %d\n' "$(_short_cmd "$@")" "$RC"
        head -c 2000 "$OUT" | head -n 12 | sed 's/^/  > /'
        head -c 2000 "$ERR" | head -n 12 | sed 's/^/  ! /'
    } >&2
}

# run_in FILE CMD...: like run, with stdin from FILE.
run_in() {
    local in=$1
    shift
    RC=0
    "$@" >"$OUT" 2>"$ERR" <"$in" || RC=$?
    _debug_show "$@"
}

# expect_exit CODE CMD...: run CMD (see run) and require exit status CODE. CODE may be a list
# such as "0|3". Crashes (signals, sanitizer reports) always fail.
expect_exit() {
    local want=$1
    shift
    run "$@"
    if _crashed; then
        note "crashed (exit $RC): $(_short_cmd "$@")"$'\n'"$(_tail_output)"
        return 1
    fi
    if [[ "|$want|" != *"|$RC|"* ]]; then
        note "expected exit $want, got $RC: $(_short_cmd "$@")"$'\n'"$(_tail_output)"
        return 1
    fi
    return 0
}

_short_cmd() {
    local s="$*"
    s="${s//$COFFER/coffer}"
    s="${s//$TMP/\$TMP}"
    printf '%s' "${s:0:240}"
}

# output_has REGEX [DESC]: the last command's stdout+stderr match an extended regex.
output_has() {
    # (no "| grep -q" here: with pipefail, an early exit of grep fails the pipeline)
    if grep -aqE -- "$1" "$OUT" "$ERR"; then
        return 0
    fi
    note "${2:-output does not match /$1/}"$'\n'"$(_tail_output)"
    return 1
}

# cf ARGS...: the coffer binary (for use with run / expect_exit).
cf() {
    "$COFFER" "$@"
}

# new_repo DIR [INIT OPTIONS...]: create a repository; exits the script if that fails.
new_repo() {
    local dir=$1
    shift
    if ! "$COFFER" --repo "$dir" init $KDF "$@" >"$TMP/.init.out" 2>&1; then
        echo "cannot create a repository at $dir:" >&2
        cat "$TMP/.init.out" >&2
        exit 1
    fi
}

# json_get FILE EXPR: evaluate a python expression over the JSON document j read from FILE
# (for --json output with several lines, the last line is used).
json_get() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
text = open(sys.argv[1], 'rb').read().decode('utf-8', 'replace').strip()
try:
    j = json.loads(text)
except ValueError:
    try:
        j = json.loads(text.splitlines()[-1])
    except (ValueError, IndexError):
        print('<not JSON>')
        sys.exit(1)
v = eval(sys.argv[2])
print(v if not isinstance(v, (dict, list)) else json.dumps(v))
EOF
}

# repo_bytes DIR: apparent size of a directory tree in bytes.
repo_bytes() {
    du -sb "$1" | cut -f1
}

# rand_file PATH SIZE_MIB: a file of random bytes.
rand_file() {
    head -c "$(($2 * 1048576))" /dev/urandom >"$1"
}

# assert_same_tree A B [--no-root-meta]: content (diff -r) and metadata of two trees agree.
# Compares types, mode (incl. setuid/setgid/sticky), uid, gid, mtime (seconds; nanoseconds
# too with COMPARE_NS=1), sizes, symlink targets, hard-link groups and xattrs. Prints the
# differences, records them with note, and returns non-zero if any.
assert_same_tree() {
    local a=$1 b=$2 rootmeta=1
    [[ "${3:-}" == "--no-root-meta" ]] && rootmeta=0
    local dout="$TMP/.diff.out" rc=0
    diff -r --no-dereference "$a" "$b" >"$dout" 2>&1 || rc=$?
    local special='^File .* is a (fifo|socket|character special file|block special file) while file .* is a (fifo|socket|character special file|block special file)$'
    # diff reports two FIFOs (or two devices) as different: their types are compared below
    if [[ $rc -ge 2 ]] || [[ $rc -eq 1 && -n "$(grep -avE "$special" "$dout")" ]]; then
        note "content differs (diff -r $a $b):"$'\n'"$(head -n 15 "$dout" | cut -c1-300 | sed 's/^/  | /')"
        return 1
    fi
    local mout="$TMP/.meta.out"
    if ! python3 - "$a" "$b" "$rootmeta" "${COMPARE_NS:-0}" >"$mout" 2>&1 <<'EOF'; then
import os, stat, sys

a, b = os.fsencode(sys.argv[1]), os.fsencode(sys.argv[2])
rootmeta, compare_ns = sys.argv[3] == '1', sys.argv[4] == '1'

def walk(root):
    out = {}
    def rec(rel):
        p = os.path.join(root, rel) if rel else root
        st = os.lstat(p)
        out[rel] = st
        if stat.S_ISDIR(st.st_mode):
            for name in os.listdir(p):
                rec(os.path.join(rel, name) if rel else name)
    rec(b'')
    return out

def xattrs(p):
    try:
        names = os.listxattr(p, follow_symlinks=False)
    except OSError:
        return {}
    d = {}
    for n in names:
        try:
            d[n] = os.getxattr(p, n, follow_symlinks=False)
        except OSError as e:
            d[n] = 'error %d' % e.errno
    return d

def show(rel):
    return repr(rel.decode('utf-8', 'backslashreplace') or '.')

ta, tb = walk(a), walk(b)
problems = []
for rel in sorted(set(ta) - set(tb)):
    problems.append('only in A: ' + show(rel))
for rel in sorted(set(tb) - set(ta)):
    problems.append('only in B: ' + show(rel))
for rel in sorted(set(ta) & set(tb)):
    sa, sb = ta[rel], tb[rel]
    pa, pb = os.path.join(a, rel) if rel else a, os.path.join(b, rel) if rel else b
    if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
        problems.append('%s: type %o != %o' % (show(rel), stat.S_IFMT(sa.st_mode), stat.S_IFMT(sb.st_mode)))
        continue
    if rel == b'' and not rootmeta:
        continue
    islnk = stat.S_ISLNK(sa.st_mode)
    if not islnk and stat.S_IMODE(sa.st_mode) != stat.S_IMODE(sb.st_mode):
        problems.append('%s: mode %04o != %04o' % (show(rel), stat.S_IMODE(sa.st_mode), stat.S_IMODE(sb.st_mode)))
    if (sa.st_uid, sa.st_gid) != (sb.st_uid, sb.st_gid):
        problems.append('%s: owner %d:%d != %d:%d' % (show(rel), sa.st_uid, sa.st_gid, sb.st_uid, sb.st_gid))
    if compare_ns:
        if sa.st_mtime_ns != sb.st_mtime_ns:
            problems.append('%s: mtime %d ns != %d ns' % (show(rel), sa.st_mtime_ns, sb.st_mtime_ns))
    elif sa.st_mtime_ns // 10**9 != sb.st_mtime_ns // 10**9:
        problems.append('%s: mtime %d != %d' % (show(rel), sa.st_mtime_ns // 10**9, sb.st_mtime_ns // 10**9))
    if stat.S_ISREG(sa.st_mode) and sa.st_size != sb.st_size:
        problems.append('%s: size %d != %d' % (show(rel), sa.st_size, sb.st_size))
    if islnk and os.readlink(pa) != os.readlink(pb):
        problems.append('%s: symlink target %r != %r' % (show(rel), os.readlink(pa), os.readlink(pb)))
    if stat.S_ISCHR(sa.st_mode) or stat.S_ISBLK(sa.st_mode):
        if sa.st_rdev != sb.st_rdev:
            problems.append('%s: device %x != %x' % (show(rel), sa.st_rdev, sb.st_rdev))
    xa, xb = xattrs(pa), xattrs(pb)
    if xa != xb:
        problems.append('%s: xattrs %r != %r' % (show(rel), xa, xb))

def groups(t):
    by = {}
    for rel, st in t.items():
        if not stat.S_ISDIR(st.st_mode):
            by.setdefault((st.st_dev, st.st_ino), []).append(rel)
    return {frozenset(v) for v in by.values() if len(v) > 1}

ga, gb = groups(ta), groups(tb)
for g in sorted(ga - gb, key=sorted):
    problems.append('hard-link group in A only: ' + ', '.join(show(r) for r in sorted(g)))
for g in sorted(gb - ga, key=sorted):
    problems.append('hard-link group in B only: ' + ', '.join(show(r) for r in sorted(g)))

for p in problems[:25]:
    print(p)
if len(problems) > 25:
    print('... and %d more' % (len(problems) - 25))
sys.exit(1 if problems else 0)
EOF
        note "metadata differs ($a vs $b):"$'\n'"$(head -n 26 "$mout" | cut -c1-300 | sed 's/^/  | /')"
        return 1
    fi
    return 0
}

# bg CMD...: start a background command that is killed at exit; its pid is in $BG_PID.
bg() {
    "$@" &
    BG_PID=$!
    BG_PIDS+=("$BG_PID")
}

# mount_tmpfs DIR SIZE: mount a small tmpfs at DIR (unmounted at exit). Fails (non-zero) where
# mounting is not allowed, so callers can skip.
mount_tmpfs() {
    mkdir -p "$1"
    [[ $(id -u) -eq 0 ]] || return 1
    mount -t tmpfs -o "size=$2,mode=0755" coffer-e2e "$1" 2>/dev/null || return 1
    MOUNTS+=("$1")
}

# db_skip DB WHY: the database's test cannot run here: skip (exit 77), or fail when
# COFFER_REQUIRE_DATABASES names DB (CI must not pass by skipping)
db_skip() {
    if [[ ",${COFFER_REQUIRE_DATABASES:-}," == *"$1"* ]]; then
        echo "FAIL - $1 is required (COFFER_REQUIRE_DATABASES) but unavailable: $2"
        exit 1
    fi
    echo "skip - $1: $2"
    exit 77
}
