#!/usr/bin/env bash
# test_pg_prefetch.sh - WAL prefetch of 'coffer wal-fetch': a recovery with a password
# credential opens the repository far fewer times than it replays segments (each opening
# runs COFFER_PASSWORD_COMMAND, which counts) and recovers the same data; the spool holds
# only complete files under "<segment>.<sha256>", hands a spooled segment out without a
# credential, refuses a damaged one (the repository is asked instead), never spools history
# files nor "not archived", is skipped when it cannot be written, and a killed or failed
# prefetch leaves no partial file under a real name.
# Skips (exit 77) without PostgreSQL unless COFFER_REQUIRE_DATABASES contains "postgres".
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/pg_lib.sh"

pg_require

REPO="$PGROOT/repo"
PW="$PGROOT/password"
CNT="$PGROOT/opens"
CONF="$PGROOT/coffer.env"
SEGSIZE=16777216

as_pg mkdir "$REPO"
printf '%s\n' "$COFFER_PASSWORD" | as_pg tee "$PW" >/dev/null
as_pg chmod 600 "$PW"
as_pg touch "$CNT"
printf 'COFFER_REPO=%s\nCOFFER_PASSWORD_FILE=%s\n' "$REPO" "$PW" | as_pg tee "$CONF" >/dev/null
if ! as_pg env -u COFFER_PASSWORD COFFER_PASSWORD_FILE="$PW" "$COFFER" --repo "$REPO" init $KDF \
    >"$TMP/init.out" 2>&1; then
    cat "$TMP/init.out" >&2
    echo "cannot create the repository" >&2
    exit 1
fi

# coffer as the server's OS user; every repository opening with the password appends a
# line to $CNT naming the coffer command that asked (its process or the one above it: the
# server's calls write to RECOVERYXLOG, the check run of pg restore to coffer-verify.tmp)
as_pg tee "$PGROOT/pwcmd.sh" >/dev/null <<EOS
#!/bin/sh
p=\$PPID
line=open
for i in 1 2; do
    line="\$line \$(tr '\\0' ' ' </proc/\$p/cmdline 2>/dev/null)"
    p=\$(cut -d' ' -f4 /proc/\$p/stat 2>/dev/null)
    [ -n "\$p" ] || break
done
echo "\$line" >> '$CNT'
cat '$PW'
EOS
as_pg chmod 700 "$PGROOT/pwcmd.sh"
PWCMD="$PGROOT/pwcmd.sh"
cfpg() {
    as_pg env -u COFFER_PASSWORD COFFER_REPO="$REPO" COFFER_PASSWORD_COMMAND="$PWCMD" \
        "$COFFER" "$@"
}
AS_PG=()
[[ $(id -u) -eq 0 ]] && AS_PG=(runuser -u postgres --)
opens() { wc -l <"$CNT" | tr -d ' '; }
figure() { printf '# figure: %s\n' "$*"; }

if ! pg_init main "archive_mode = on" "archive_command = '$COFFER wal-push --config $CONF %p'" ||
    ! pg_start main; then
    pg_skip "cannot initdb or start a cluster"
fi

switch_and_wait() {
    local seg i
    seg=$(pg_sql main "select pg_walfile_name(pg_current_wal_lsn())")
    pg_sql main "select pg_switch_wal()" >/dev/null
    for i in $(seq 1 200); do
        [[ -f "$REPO/archive/pgwal/$seg" ]] && return 0
        sleep 0.05
    done
    note "segment $seg was never archived"
    return 1
}

SUM_SQL="select md5(coalesce(string_agg(t::text, ';' order by id), '')) from t"
segments() { ls "$REPO/archive/pgwal" | grep -E '^[0-9A-F]{24}$' | sort; }

# spool_ok DIR [TMP_ALLOWED]: every file is "<segment>.<sha256>" with that SHA-256 and a
# segment's size (temporary files only when TMP_ALLOWED=1); prints the spooled segments
spool_ok() {
    local dir=$1 tmp_ok=${2:-0} f sum
    for f in $(as_pg ls -A "$dir"); do
        if [[ "$f" =~ ^[0-9A-F]{24}\.[0-9a-f]{64}$ ]]; then
            sum=$(as_pg sha256sum "$dir/$f" | cut -d' ' -f1)
            [[ "$sum" == "${f:25}" ]] || { note "spool file $f holds other content ($sum)"; return 1; }
            [[ $(as_pg stat -c %s "$dir/$f") == "$SEGSIZE" ]] || { note "spool file $f is not a whole segment"; return 1; }
            echo "${f:0:24}"
        elif [[ "$f" == .tmp-* && "$tmp_ok" == 1 ]]; then
            :
        else
            note "unexpected file in the spool: $f"
            return 1
        fi
    done
}

case_workload() {
    pg_sql main "create table t(id int primary key, v text)" || return 1
    expect_exit 0 cfpg --json pg backup --pgdata "$PGROOT/main" || return 1
    local i
    for i in $(seq 1 22); do
        pg_sql main "insert into t select g, md5(g::text) from generate_series($((i * 1000)), $((i * 1000 + 999))) g" ||
            return 1
        switch_and_wait || return 1
    done
    WANT_SUM=$(pg_sql main "$SUM_SQL")
    pg_stop main || note "cannot stop the primary"
    figure "$(segments | wc -l) segments archived"
}

case_recovery_opens_less() {
    : >"$CNT"
    local dir="$PGROOT/r1" port replayed n
    expect_exit 0 cfpg --json pg restore --target "$dir" --latest --start \
        --set port=$PG_NEXT_PORT --set unix_socket_directories="$PGROOT/sock" || return 1
    PG_NEXT_PORT=$((PG_NEXT_PORT + 1))
    grep -q -- "--prefetch 16 --spool ''$dir/pg_wal/coffer-prefetch''" "$dir/postgresql.auto.conf" ||
        note "restore_command does not prefetch: $(grep restore_command "$dir/postgresql.auto.conf")"
    grep -q "^recovery_end_command = .*--remove-spool" "$dir/postgresql.auto.conf" ||
        note "no recovery_end_command removing the spool"
    port=$(pg_port_of "$dir")
    check "the restored data differs" test "$(pg_sql_port "$port" "$SUM_SQL")" = "$WANT_SUM"
    replayed=$(grep -ac 'restored log file "[0-9A-F]\{24\}" from archive' "$dir/coffer-restore.log")
    n=$(opens)
    local server check_run
    server=$(grep -c RECOVERYXLOG "$CNT")
    check_run=$(grep -c coffer-verify.tmp "$CNT")
    figure "recovery replayed $replayed segments from the archive; the repository was opened $n times: $server in the server's restore_command calls, $check_run in the check run of pg restore, $((n - server - check_run)) by pg restore itself"
    ((replayed >= 20)) || note "only $replayed segments replayed from the archive"
    ((n * 2 < replayed)) || note "the repository was opened $n times for $replayed segments"
    # the first segment comes from the check run's spool, the last one's second read from
    # the copy kept in the spool, "not archived" from the storage alone: with 16 segments
    # prefetched per opening, 24 segments need one opening in the server's calls
    ((server <= 2)) || note "the server's restore_command calls opened the repository $server times"
    ((check_run == 1)) || note "the check run opened the repository $check_run times"
    check "the spool is left after recovery ended" test ! -e "$dir/pg_wal/coffer-prefetch"
    as_pg "$PGBIN/pg_ctl" -D "$dir" -m fast -w -t 60 stop >/dev/null 2>&1
    return 0
}

# a standby fed from the archive polls for the next segment: the newest segment stays
# spooled while it polls, and it follows what the primary archives later
case_standby_follows() {
    local dir="$PGROOT/sb" sp port i want got
    sp="$dir/pg_wal/coffer-prefetch"
    pg_start main || return 1
    expect_exit 0 cfpg --json pg restore --target "$dir" --standby --archive-mode off --start \
        --set port=$PG_NEXT_PORT --set unix_socket_directories="$PGROOT/sock" || return 1
    PG_NEXT_PORT=$((PG_NEXT_PORT + 1))
    port=$(pg_port_of "$dir")
    standby_has() {
        for i in $(seq 1 300); do
            [[ "$(pg_sql_port "$port" "$SUM_SQL" 2>/dev/null)" == "$1" ]] && return 0
            sleep 0.1
        done
        return 1
    }
    check "the standby did not replay the archive" standby_has "$(pg_sql main "$SUM_SQL")"
    got=$(spool_ok "$sp" | tr '\n' ' ')
    check "while polling, the spool holds [$got], want the last archived segment" \
        test "$got" = "$(segments | tail -n 1) "
    for i in 1 2 3; do
        pg_sql main "insert into t select g, md5(g::text) from generate_series($((100000 + i * 1000)), $((100000 + i * 1000 + 999))) g" ||
            return 1
        switch_and_wait || return 1
    done
    want=$(pg_sql main "$SUM_SQL")
    check "the standby did not follow the segments archived later" standby_has "$want"
    got=$(spool_ok "$sp" | tr '\n' ' ')
    check "after following, the spool holds [$got], want the last archived segment" \
        test "$got" = "$(segments | tail -n 1) "
    check "the standby left recovery" test "$(pg_sql_port "$port" 'select pg_is_in_recovery()')" = t
    pg_stop main || note "cannot stop the primary"
    as_pg "$PGBIN/pg_ctl" -D "$dir" -w -t 60 promote >/dev/null 2>&1 ||
        { note "pg_ctl promote failed"; return 1; }
    check "the promoted standby has other data" test "$(pg_sql_port "$port" "$SUM_SQL")" = "$want"
    check "the spool is left after the standby was promoted" test ! -e "$sp"
    as_pg "$PGBIN/pg_ctl" -D "$dir" -m fast -w -t 60 stop >/dev/null 2>&1
    return 0
}

# the archived segments, and wal-fetch by hand into a spool of our own
case_spool_contract() {
    local sp="$PGROOT/spool" out="$PGROOT/out" s1 s2 s3 s4 last n0 got
    mapfile -t SEGS < <(segments)
    s1=${SEGS[3]} s2=${SEGS[4]} s3=${SEGS[5]} s4=${SEGS[6]}
    last=${SEGS[-1]}
    as_pg mkdir -p "$out"
    # references straight from the repository (no spool)
    for s in "$s2" "$s3"; do
        expect_exit 0 cfpg wal-fetch --prefetch 0 "$s" "$out/ref-$s" || return 1
    done
    n0=$(opens)
    expect_exit 0 cfpg -v wal-fetch --spool "$sp" --prefetch 4 "$s1" "$out/a" || return 1
    check "the first fetch did not open the repository once" test "$(opens)" = $((n0 + 1))
    check "the spool is not 0700" test "$(as_pg stat -c %a "$sp")" = 700
    got=$(spool_ok "$sp" | tr '\n' ' ')
    check "spooled [$got], want the 4 segments after $s1" \
        test "$got" = "$(printf '%s ' "${SEGS[@]:4:4}")"
    # taken from the spool: no credential at all, not even a repository
    n0=$(opens)
    expect_exit 0 as_pg env -i PATH=/usr/bin:/bin "$COFFER" wal-fetch --spool "$sp" "$s2" "$out/b" ||
        return 1
    check "a spooled segment opened the repository" test "$(opens)" = "$n0"
    check "the spooled segment differs from the archived one" cmp "$out/b" "$out/ref-$s2"
    check "the spooled file stayed after it was taken (newer ones are spooled)" \
        test -z "$(as_pg ls "$sp" | grep "^$s2")"
    # damaged on disk: not handed out, removed, and the repository gives the right bytes
    local f
    f=$(as_pg ls "$sp" | grep "^$s3")
    printf 'X' | as_pg dd of="$sp/$f" bs=1 seek=100000 conv=notrunc status=none
    expect_exit 2 as_pg env -i PATH=/usr/bin:/bin "$COFFER" wal-fetch --spool "$sp" "$s3" "$out/c"
    check "a damaged spool file was handed out" test ! -s "$out/c"
    expect_exit 0 cfpg wal-fetch --spool "$sp" "$s3" "$out/c" || return 1
    check "after a damaged spool file, the repository was not asked" test "$(opens)" = $((n0 + 1))
    check "the fetch after a damaged spool file differs from the archive" cmp "$out/c" "$out/ref-$s3"
    check "the damaged spool file is still there" test -z "$(as_pg ls "$sp" | grep "^$f")"
    # what PostgreSQL moved past is removed: after s4, nothing at or before it is spooled
    expect_exit 0 as_pg env -i PATH=/usr/bin:/bin "$COFFER" wal-fetch --spool "$sp" "$s4" "$out/d" ||
        return 1
    got=$(spool_ok "$sp" | tr '\n' ' ')
    check "older segments than $s4 stayed in the spool: [$got]" \
        test -z "$(spool_ok "$sp" | awk -v s="$s4" '($0 "") <= (s "")')"
    # history files: never spooled; "not archived" is the storage's answer (no key needed) and
    # is not remembered: once the file is archived, the next fetch returns it
    n0=$(opens)
    expect_exit 1 cfpg wal-fetch --spool "$sp" 00000009.history "$out/h"
    expect_exit 1 cfpg wal-fetch --spool "$sp" 00000009.history "$out/h"
    check "an absent history file needed the key" test "$(opens)" = "$n0"
    printf '1\t0/3000000\tno recovery target specified\n' | as_pg tee "$PGROOT/00000009.history" >/dev/null
    expect_exit 0 cfpg wal-push "$PGROOT/00000009.history" || return 1
    expect_exit 0 cfpg wal-fetch --spool "$sp" 00000009.history "$out/h" || return 1
    check "the history file fetched differs from the one archived" cmp "$out/h" "$PGROOT/00000009.history"
    check "a history file was spooled" test -z "$(as_pg ls -A "$sp" | grep -v '^[0-9A-F]\{24\}\.')"
    # the end of the archive: fetched, nothing after it spooled but a copy of it (PostgreSQL
    # reads the last segment twice), which is handed out as a copy and stays spooled;
    # "not archived" is not cached
    expect_exit 0 cfpg -v wal-fetch --spool "$sp" "$last" "$out/e" || return 1
    output_has "kept in the spool" "wal-fetch -v does not say the last segment was kept"
    check "the last archived segment was not kept in the spool" \
        test "$(spool_ok "$sp" | tr '\n' ' ')" = "$last "
    n0=$(opens)
    local k
    for k in 1 2; do
        expect_exit 0 as_pg env -i PATH=/usr/bin:/bin "$COFFER" wal-fetch --spool "$sp" "$last" \
            "$out/e$k" || return 1
        check "the kept last segment differs from the archived one ($k)" cmp "$out/e$k" "$out/e"
    done
    check "the kept last segment opened the repository" test "$(opens)" = "$n0"
    check "the kept last segment left the spool" test "$(spool_ok "$sp" | tr '\n' ' ')" = "$last "
    # the copy handed out is the server's own file: writing into it leaves the spool intact
    printf 'X' | as_pg dd of="$out/e1" bs=1 seek=100000 conv=notrunc status=none
    check "writing into a handed-out copy changed the spooled file" \
        test "$(spool_ok "$sp" | tr '\n' ' ')" = "$last "
    local next
    next=$(python3 -c "import sys; s = sys.argv[1]; n = int(s[8:16], 16) * 256 + int(s[16:], 16) + 1; print('%s%08X%08X' % (s[:8], n // 256, n % 256))" "$last")
    n0=$(opens)
    expect_exit 1 cfpg wal-fetch --spool "$sp" "$next" "$out/f"
    expect_exit 1 cfpg wal-fetch --spool "$sp" "$next" "$out/f"
    check "a segment past the end of the archive needed the key" test "$(opens)" = "$n0"
    check "a segment past the end of the archive was written" test ! -e "$out/f"
    spool_ok "$sp" >/dev/null
    expect_exit 0 cfpg wal-fetch --remove-spool --spool "$sp" || return 1
    check "--remove-spool left the spool" test ! -e "$sp"
}

case_spool_not_writable() {
    local sp="$PGROOT/ro-spool" out="$PGROOT/out"
    mapfile -t SEGS < <(segments)
    as_pg mkdir -m 0500 "$sp"
    if [[ $(id -u) -ne 0 && -w "$sp" ]]; then
        SKIPPED="the directory stays writable"
        return 0
    fi
    expect_exit 0 cfpg -v wal-fetch --spool "$sp" "${SEGS[2]}" "$out/ro" || return 1
    output_has "spool not usable" "wal-fetch -v does not say the spool was not usable"
    expect_exit 0 cfpg wal-fetch --prefetch 0 "${SEGS[2]}" "$out/ro-ref" || return 1
    check "the fetch with an unwritable spool wrote other bytes" cmp "$out/ro" "$out/ro-ref"
    check "an unwritable spool got files" test -z "$(as_pg ls -A "$sp")"
    # a spool whose parent does not exist: skipped as well
    expect_exit 0 cfpg wal-fetch --spool "$PGROOT/nosuch/dir" "${SEGS[2]}" "$out/ro2" || return 1
}

case_killed_prefetch() {
    local sp="$PGROOT/kill-spool" out="$PGROOT/out" d pid tmp_seen=0 k=0
    mapfile -t SEGS < <(segments)
    for d in 0.02 0.04 0.06 0.08 0.1 0.13 0.16 0.2 0.25 0.3; do
        as_pg rm -rf "$sp"
        # in a process group of its own: the kill reaches coffer through runuser
        setsid "${AS_PG[@]}" env -u COFFER_PASSWORD COFFER_REPO="$REPO" \
            COFFER_PASSWORD_COMMAND="$PWCMD" "$COFFER" wal-fetch --spool "$sp" --prefetch 16 \
            "${SEGS[1]}" "$out/k" >/dev/null 2>&1 &
        pid=$!
        sleep "$d"
        kill -KILL -- -"$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        k=$((k + 1))
        [[ -n "$(as_pg ls -A "$sp" 2>/dev/null | grep '^\.tmp-')" ]] && tmp_seen=$((tmp_seen + 1))
        [[ -d "$sp" ]] && { spool_ok "$sp" 1 >/dev/null || return 1; }
    done
    figure "killed $k prefetches; $tmp_seen left a temporary file (never a file under a real name)"
    # the next prefetch removes leftovers
    expect_exit 0 cfpg wal-fetch --spool "$sp" --prefetch 2 "${SEGS[1]}" "$out/k" || return 1
    check "a leftover temporary file survived the next prefetch" \
        test -z "$(as_pg ls -A "$sp" | grep '^\.tmp-')"
    spool_ok "$sp" >/dev/null
}

case_full_spool() {
    # a write that fails (no space): the temporary file goes, nothing under a real name
    if [[ $(id -u) -ne 0 ]]; then
        SKIPPED="needs root to mount a small tmpfs"
        return 0
    fi
    local mnt="$TMP/small" out="$PGROOT/out"
    mkdir -p "$mnt"
    if ! mount -t tmpfs -o size=40m,mode=0755 tmpfs "$mnt" 2>/dev/null; then
        SKIPPED="cannot mount a tmpfs"
        return 0
    fi
    MOUNTS+=("$mnt")
    chown postgres: "$mnt" 2>/dev/null
    mapfile -t SEGS < <(segments)
    expect_exit 0 cfpg wal-fetch --spool "$mnt/sp" --prefetch 4 "${SEGS[1]}" "$out/full" || return 1
    local got
    got=$(spool_ok "$mnt/sp" | wc -l)
    # two parallel writes: one or two whole segments fit in 40 MiB, never four
    check "a full spool holds $got segments, want 1 or 2" test "$got" -ge 1 -a "$got" -le 2
    check "a failed write left a temporary file" test -z "$(as_pg ls -A "$mnt/sp" | grep '^\.tmp-')"
    umount "$mnt"
}

run_case "22 segments of WAL archived after a base backup" case_workload
run_case "recovery with a password opens the repository far fewer times than segments replayed" case_recovery_opens_less
run_case "a standby polls with the newest segment spooled and follows the archive" case_standby_follows
run_case "spool: hand-out without a credential, damaged files refused, history and missing never spooled" case_spool_contract
run_case "an unwritable spool: the fetch works, nothing is spooled" case_spool_not_writable
run_case "killed prefetches leave no partial file under a real name" case_killed_prefetch
run_case "a spool without space: no partial file" case_full_spool
finish
