#!/usr/bin/env bash
# pg_recovery.sh - PostgreSQL disaster-recovery benchmark: coffer vs pgBackRest restoring the
# same cluster (pgbench, about 1 GiB at scale 70) from their own repositories and replaying
# the same WAL archive (about 100 MiB) to the end. See bench/README.md.
#
# Usage (Debian 12, as root or as an ordinary user; no terminal needed):
#   bash bench/pg_recovery.sh
# Environment:
#   BENCH_PG_SCALE    pgbench scale factor (default 70: about 1 GiB of data)
#   BENCH_PG_WAL_MB   WAL to generate after the base backups, MiB (default 100)
#   BENCH_PG_PORT     first port tried on 127.0.0.1 (default 55432; the next free one is used)
#   BENCH_PG_AUTH     coffer credential: password (a password file, default) or key (a key file)
#   BENCH_DIR         work dir (default <repo>/bench/work/pg-recovery); deleted at start
#   COFFER_BIN        coffer binary; if unset, build/release/coffer (built if missing)
# Exit status: 0 when both tools restored and recovered the expected state; 1 otherwise.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
SCALE=${BENCH_PG_SCALE:-70}
WAL_MB=${BENCH_PG_WAL_MB:-100}
PORT0=${BENCH_PG_PORT:-55432}
AUTH=${BENCH_PG_AUTH:-password}
W=${BENCH_DIR:-"$SCRIPT_DIR/work/pg-recovery"}
STANZA=bench
PROCESS_MAX=2
ZST_LEVEL=3

die() { echo "pg_recovery.sh: $*" >&2; exit 2; }
log() { echo "== $(date -u +%H:%M:%S) $*"; }
for v in SCALE WAL_MB PORT0; do
  case "${!v}" in ''|*[!0-9]*) die "$v must be a whole number (got '${!v}')" ;; esac
done
[ "$SCALE" -ge 1 ] && [ "$WAL_MB" -ge 16 ] || die "BENCH_PG_SCALE >= 1 and BENCH_PG_WAL_MB >= 16"
case "$AUTH" in password|key) ;; *) die "BENCH_PG_AUTH is password or key" ;; esac

# Nothing from the caller's environment reaches the tools or the server.
for v in $(compgen -e); do
  case "$v" in COFFER_BIN) ;; COFFER_*|PG*) unset "$v" ;; esac
done
export LC_ALL=C TZ=UTC

# ---------------------------------------------------------------------------------------------
# 1. Dependencies, the server's OS user, coffer
# ---------------------------------------------------------------------------------------------
find_pgbin() {
  local d best=""
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/pgbench" ] && best=$d
  done
  PGBIN=$best
}
find_pgbin
need=()
[ -n "$PGBIN" ] || need+=(postgresql postgresql-client)
command -v pgbackrest >/dev/null 2>&1 || need+=(pgbackrest)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  log "installing missing packages: ${need[*]}"
  [ "$(id -u)" -eq 0 ] || die "need root to install ${need[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=120 update </dev/null >/dev/null
  apt-get -o DPkg::Lock::Timeout=120 install -y --no-install-recommends "${need[@]}" </dev/null >/dev/null
  find_pgbin
fi
[ -n "$PGBIN" ] || die "PostgreSQL server programs not found under /usr/lib/postgresql/*/bin"
export PATH="$PGBIN:$PATH"

# PostgreSQL refuses to run as root: as root, the server and every tool touching its files
# or the repositories run as "postgres" (the package creates it).
if [ "$(id -u)" -eq 0 ]; then
  SRV_USER=postgres
  id "$SRV_USER" >/dev/null 2>&1 || die "no '$SRV_USER' user (install the postgresql package)"
  as_srv() { runuser -u "$SRV_USER" -- "$@"; }
else
  SRV_USER=$(id -un)
  as_srv() { "$@"; }
fi

if [ -z "${COFFER_BIN:-}" ]; then
  COFFER_BIN=$ROOT/build/release/coffer
  if [ ! -x "$COFFER_BIN" ]; then
    log "building coffer (release preset)"
    (cd "$ROOT" && cmake --preset release >/dev/null && cmake --build build/release -j2 >/dev/null) ||
      die "coffer build failed"
  fi
fi
case "$COFFER_BIN" in /*) ;; *) COFFER_BIN=$(pwd)/$COFFER_BIN ;; esac
[ -x "$COFFER_BIN" ] || die "coffer binary $COFFER_BIN is missing or not executable"

# ---------------------------------------------------------------------------------------------
# 2. Work dir, configuration of both tools
# ---------------------------------------------------------------------------------------------
case "$W" in /*) ;; *) W=$(pwd)/$W ;; esac
case "$W" in *[!A-Za-z0-9/._-]*) die "BENCH_DIR '$W' may hold only letters, digits and / . _ -" ;; esac

DATA=$W/data SOCK=$W/sock LOGS=$W/logs
CREPO=$W/repo-coffer
BCONF=$W/pgbackrest.conf BREPO=$W/repo-pgbackrest
COFFER=$W/bin/coffer
R_COFFER=$W/restore-coffer R_PGBR=$W/restore-pgbackrest

stop_server() { # stop_server DATADIR
  [ -f "$1/postmaster.pid" ] || return 0
  as_srv "$PGBIN/pg_ctl" -D "$1" -m fast -w -t 120 stop >/dev/null 2>&1 ||
    as_srv "$PGBIN/pg_ctl" -D "$1" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
}
cleanup() {
  set +e
  local d
  for d in "$DATA" "$R_COFFER" "$R_PGBR"; do stop_server "$d"; done
}
trap cleanup EXIT
cleanup
rm -rf "$W"
mkdir -p "$W"
[ "$(id -u)" -eq 0 ] && chown "$SRV_USER:" "$W"
chmod 0755 "$W"
as_srv test -x "$W" || die "user $SRV_USER cannot reach $W: set BENCH_DIR to a directory it can reach"
cd "$W"   # the server's user cannot read root's working directory
as_srv mkdir -p "$SOCK" "$LOGS" "$W/bin" "$W/pgbackrest/log" "$W/pgbackrest/lock" "$W/pgbackrest/spool"
# a private copy: a rebuild of the tree during the run cannot swap the binary
as_srv cp "$COFFER_BIN" "$COFFER"

free_port() {
  local p=$1
  while ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; do p=$((p + 1)); done
  echo "$p"
}
PORT=$(free_port "$PORT0")

# a password (scrypt, default cost) and a key slot; $CENV names the one BENCH_PG_AUTH picks,
# $W/coffer-key.env the key (for the per-call figures)
as_srv sh -c "umask 077; printf '%s\n' bench-pg-recovery > '$W/coffer.password'"
as_srv sh -c "umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > '$W/coffer.key'"
as_srv sh -c "umask 077; printf 'COFFER_REPO=%s\nCOFFER_KEY_FILE=%s\n' '$CREPO' '$W/coffer.key' > '$W/coffer-key.env'"
as_srv sh -c "umask 077; printf 'COFFER_REPO=%s\nCOFFER_PASSWORD_FILE=%s\n' '$CREPO' '$W/coffer.password' > '$W/coffer-password.env'"
CENV=$W/coffer-$AUTH.env
# coffer opened with the password (init, key add); the pg, wal-push and wal-fetch commands
# read the environment file instead (--config)
cof_env() { as_srv env COFFER_REPO="$CREPO" COFFER_PASSWORD_FILE="$W/coffer.password" "$COFFER" "$@"; }

as_srv sh -c "umask 077; cat > '$BCONF'" <<EOF
[global]
repo1-path=$BREPO
repo1-retention-full=2
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=bench-pg-recovery
compress-type=zst
compress-level=$ZST_LEVEL
process-max=$PROCESS_MAX
archive-async=n
start-fast=y
log-path=$W/pgbackrest/log
lock-path=$W/pgbackrest/lock
spool-path=$W/pgbackrest/spool
log-level-console=warn
log-level-file=info

[$STANZA]
pg1-path=$DATA
pg1-port=$PORT
pg1-socket-path=$SOCK
pg1-user=postgres
EOF
pgbr() { as_srv pgbackrest --config="$BCONF" --stanza="$STANZA" "$@"; }

ARCHIVE_CMD="$COFFER wal-push --config $CENV %p && pgbackrest --config=$BCONF --stanza=$STANZA archive-push %p"

sql() { # sql PORT SQL
  as_srv psql -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$1" -U postgres -d postgres -At -c "$2"
}
now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a - b}'; }
tfield() { # tfield FILE N: field N of the last line of a /usr/bin/time -f '%e %U %S %M' file
  tail -n 1 "$1" | awk -v n="$2" '{print $n}'
}

cpu_model=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n 1)
log "machine: $(nproc) CPUs (${cpu_model:-unknown}), $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM, kernel $(uname -r)"
log "versions: $("$COFFER" version 2>&1 | head -n 1); $(pgbackrest version); $("$PGBIN/postgres" --version)"
log "settings: scale $SCALE, WAL after the backups $WAL_MB MiB, port $PORT, server user $SRV_USER, work dir $W"
log "  both: zstd level $ZST_LEVEL, encrypted repository, $PROCESS_MAX processes/threads for backup"
log "  coffer: $AUTH credential file; pgBackRest: aes-256-cbc, process-max $PROCESS_MAX, archive-async=n"

# ---------------------------------------------------------------------------------------------
# 3. The cluster, both repositories, the data
# ---------------------------------------------------------------------------------------------
log "initdb and start the cluster (archive_command pushes to both tools)"
as_srv "$PGBIN/initdb" -D "$DATA" -U postgres -A trust --no-locale -E UTF8 >"$LOGS/initdb.log" 2>&1 ||
  { cat "$LOGS/initdb.log" >&2; die "initdb failed"; }
as_srv tee -a "$DATA/postgresql.conf" >/dev/null <<EOF
# ---- pg_recovery.sh ----
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$SOCK'
wal_level = replica
max_wal_senders = 4
archive_mode = on
archive_command = '$ARCHIVE_CMD'
logging_collector = off
EOF
start_server() { # start_server DATADIR LOGFILE
  as_srv env -i PATH="/usr/local/bin:/usr/bin:/bin" LC_ALL=C TZ=UTC \
    "$PGBIN/pg_ctl" -D "$1" -l "$2" -w -t 300 start >/dev/null
}
start_server "$DATA" "$LOGS/primary.log" || { tail -n 20 "$LOGS/primary.log" >&2; die "cannot start the cluster"; }

cof_env init >"$LOGS/coffer-init.out" 2>&1 || { cat "$LOGS/coffer-init.out" >&2; die "coffer init failed"; }
# a key slot beside the password slot: opens without scrypt
as_srv env COFFER_REPO="$CREPO" COFFER_PASSWORD_FILE="$W/coffer.password" \
  COFFER_NEW_KEY="$(as_srv cat "$W/coffer.key")" "$COFFER" key add >"$LOGS/coffer-key.out" 2>&1 ||
  { cat "$LOGS/coffer-key.out" >&2; die "coffer key add failed"; }
pgbr stanza-create >"$LOGS/pgbackrest-stanza.out" 2>&1 ||
  { cat "$LOGS/pgbackrest-stanza.out" >&2; die "pgbackrest stanza-create failed"; }

log "pgbench -i -s $SCALE"
t0=$(now)
as_srv pgbench -h "$SOCK" -p "$PORT" -U postgres -i -s "$SCALE" -q postgres >"$LOGS/pgbench-init.log" 2>&1 ||
  { tail -n 20 "$LOGS/pgbench-init.log" >&2; die "pgbench -i failed"; }
DB_BYTES=$(sql "$PORT" "select pg_database_size('postgres')")
log "  loaded in $(sub "$(now)" "$t0") s; database size $((DB_BYTES / 1048576)) MiB"

wait_archived() { # wait_archived SEGMENT: until pg_stat_archiver has archived it (both tools)
  local seg=$1 last
  for _ in $(seq 1 1800); do
    last=$(sql "$PORT" "select coalesce(last_archived_wal, '') from pg_stat_archiver")
    if [ -n "$last" ] && [[ ! "$last" < "$seg" ]]; then return 0; fi
    sleep 0.5
  done
  sql "$PORT" "select archived_count, failed_count, last_failed_wal from pg_stat_archiver" >&2
  die "segment $seg was not archived within 900 s"
}

# ---------------------------------------------------------------------------------------------
# 4. Base backups
# ---------------------------------------------------------------------------------------------
# The WAL of the load first: the first backup must not wait for the archiver's backlog.
seg=$(sql "$PORT" "select pg_walfile_name(pg_switch_wal())")
log "  waiting until the load's WAL (up to $seg) is in both archives"
t0=$(now)
wait_archived "$seg"
log "  archived in $(sub "$(now)" "$t0") s more"
timed() { # timed NAME CMD...: run as the server's user under /usr/bin/time, logs in $LOGS/NAME.*
  local name=$1; shift
  sync
  as_srv /usr/bin/time -f '%e %U %S %M' -o "$LOGS/$name.time" "$@" >"$LOGS/$name.out" 2>"$LOGS/$name.err"
}
report_fail() {
  echo "!! $1 FAILED; last lines of $LOGS/$1.err:" >&2
  tail -n 20 "$LOGS/$1.err" >&2
  exit 1
}

log "base backup: coffer pg backup --threads $PROCESS_MAX"
timed coffer-backup "$COFFER" --json pg backup --config "$CENV" --pgdata "$DATA" --user postgres \
  --threads "$PROCESS_MAX" || report_fail coffer-backup
log "base backup: pgbackrest backup --type=full"
timed pgbackrest-backup pgbackrest --config="$BCONF" --stanza="$STANZA" backup --type=full ||
  report_fail pgbackrest-backup
du_b() { du -sb "$1" | cut -f1; }
C_BACKUP_BYTES=$(( $(du_b "$CREPO") - $(du_b "$CREPO/archive") ))
B_BACKUP_BYTES=$(du_b "$BREPO/backup")

# ---------------------------------------------------------------------------------------------
# 5. WAL after the backups, the expected final state
# ---------------------------------------------------------------------------------------------
log "generating $WAL_MB MiB of WAL with pgbench"
lsn0=$(sql "$PORT" "select pg_current_wal_lsn()")
target=$((WAL_MB * 1048576))
while :; do
  as_srv pgbench -h "$SOCK" -p "$PORT" -U postgres -n -c 2 -j 2 -T 2 postgres >>"$LOGS/pgbench-run.log" 2>&1 ||
    { tail -n 20 "$LOGS/pgbench-run.log" >&2; die "pgbench failed"; }
  done_b=$(sql "$PORT" "select pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0')::bigint")
  [ "$done_b" -ge "$target" ] && break
done
last_seg=$(sql "$PORT" "select pg_walfile_name(pg_switch_wal())")
log "  $((done_b / 1048576)) MiB of WAL; waiting until $last_seg is in both archives"
wait_archived "$last_seg"
EXPECT=$(sql "$PORT" "select (select sum(abalance) from pgbench_accounts) || ' ' || (select count(*) from pgbench_history) || ' ' || (select sum(tbalance) from pgbench_tellers)")
log "  expected state (sum abalance, history rows, sum tbalance): $EXPECT"
stop_server "$DATA"
[ ! -f "$DATA/postmaster.pid" ] || die "the cluster did not stop"
C_REPO_BYTES=$(du_b "$CREPO")
B_REPO_BYTES=$(du_b "$BREPO")

# ---------------------------------------------------------------------------------------------
# 6. Recovery with each tool
# ---------------------------------------------------------------------------------------------
# verify DATADIR TOOL: the server there is promoted and holds the expected state
verify() {
  local port got inrec
  port=$(sed -n 4p "$1/postmaster.pid")
  inrec=$(sql "$port" "select pg_is_in_recovery()")
  got=$(sql "$port" "select (select sum(abalance) from pgbench_accounts) || ' ' || (select count(*) from pgbench_history) || ' ' || (select sum(tbalance) from pgbench_tellers)")
  if [ "$inrec" != f ] || [ "$got" != "$EXPECT" ]; then
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    echo "!! $2 RECOVERY VERIFICATION FAILED: in recovery '$inrec', state '$got', expected '$EXPECT'"
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    return 1
  fi
  echo "   $2: verified (promoted; $got)"
}
# restored_files LOGFILE: how many files restore_command delivered
restored_files() { grep -c 'restored log file' "$1" || true; }
FAILED=0

log "recovery with coffer: pg restore --latest --start"
timed coffer-restore "$COFFER" --json pg restore --config "$CENV" --target "$R_COFFER" --latest \
  --start --pg-bindir "$PGBIN" --wait-timeout 3600 || report_fail coffer-restore
C_TOTAL=$(tfield "$LOGS/coffer-restore.time" 1)
C_REPLAY=$(sed -n 's/.*"recovery_seconds": *\([0-9.eE+-]*\).*/\1/p' "$LOGS/coffer-restore.out")
C_EXTRACT=$(sed -n 's/.*"extract_seconds": *\([0-9.eE+-]*\).*/\1/p' "$LOGS/coffer-restore.out")
C_EXTRACT=$(awk -v x="${C_EXTRACT:-0}" 'BEGIN {printf "%.2f", x}')
[ -n "$C_REPLAY" ] || die "no recovery_seconds in coffer's output ($LOGS/coffer-restore.out)"
C_REPLAY=$(awk -v x="$C_REPLAY" 'BEGIN {printf "%.2f", x}')
C_RESTORE=$(sub "$C_TOTAL" "$C_REPLAY")
verify "$R_COFFER" coffer || FAILED=1
stop_server "$R_COFFER"
cp "$R_COFFER/coffer-restore.log" "$LOGS/coffer-restored-server.log" 2>/dev/null || true
C_FILES=$(restored_files "$LOGS/coffer-restored-server.log")

log "recovery with pgBackRest: restore --type=default, then start the server"
as_srv mkdir -m 0700 "$R_PGBR"
timed pgbackrest-restore pgbackrest --config="$BCONF" --stanza="$STANZA" --pg1-path="$R_PGBR" \
  --type=default --archive-mode=off restore || report_fail pgbackrest-restore
B_RESTORE=$(tfield "$LOGS/pgbackrest-restore.time" 1)
# as coffer's --start does: pg_ctl -w start, then pg_is_in_recovery() every 0.1 s until false
t0=$(now)
start_server "$R_PGBR" "$LOGS/pgbackrest-restored-server.log" ||
  { tail -n 20 "$LOGS/pgbackrest-restored-server.log" >&2; die "the pgBackRest copy did not start"; }
bport=$(sed -n 4p "$R_PGBR/postmaster.pid")
deadline=$(( $(date +%s) + 3600 ))
until [ "$(sql "$bport" "select pg_is_in_recovery()" 2>/dev/null)" = f ]; do
  [ -f "$R_PGBR/postmaster.pid" ] || die "the pgBackRest copy stopped during recovery"
  [ "$(date +%s)" -lt "$deadline" ] || die "the pgBackRest copy did not promote within 3600 s"
  sleep 0.1
done
B_REPLAY=$(sub "$(now)" "$t0")
B_TOTAL=$(awk -v a="$B_RESTORE" -v b="$B_REPLAY" 'BEGIN {printf "%.2f", a + b}')
verify "$R_PGBR" pgbackrest || FAILED=1
stop_server "$R_PGBR"
B_FILES=$(restored_files "$LOGS/pgbackrest-restored-server.log")
B_RESTORE_CMD=$(sed -n "s/^restore_command = //p" "$R_PGBR/postgresql.auto.conf" | tail -n 1)
C_RESTORE_CMD=$(sed -n "s/^restore_command = //p" "$R_COFFER/postgresql.auto.conf" | tail -n 1)

# ---------------------------------------------------------------------------------------------
# 7. Where the replay time goes: one restore_command call of each tool
# ---------------------------------------------------------------------------------------------
seg=$(as_srv ls "$CREPO/archive/pgwal" | grep -E '^[0-9A-F]{24}$' | sort | tail -n 2 | head -n 1)
fetch_avg() { # fetch_avg N CMD...: mean wall seconds of N runs
  local n=$1 t0; shift
  t0=$(now)
  for _ in $(seq 1 "$n"); do as_srv "$@" >/dev/null 2>&1 || true; done
  awk -v a="$(now)" -v b="$t0" -v n="$n" 'BEGIN {printf "%.3f", (a - b) / n}'
}
miss=00000009${seg:8}   # a valid name that is not archived (timeline 9)
as_srv rm -f "$W/fetched"
C_FETCH=$(fetch_avg 5 "$COFFER" wal-fetch --config "$CENV" "$seg" "$W/fetched")
C_MISS=$(fetch_avg 5 "$COFFER" wal-fetch --config "$CENV" "$miss" "$W/fetched")
C_FETCH_PW=$(fetch_avg 5 "$COFFER" wal-fetch --config "$W/coffer-password.env" "$seg" "$W/fetched")
C_FETCH_KEY=$(fetch_avg 5 "$COFFER" wal-fetch --config "$W/coffer-key.env" "$seg" "$W/fetched")
B_FETCH=$(fetch_avg 5 pgbackrest --config="$BCONF" --stanza="$STANZA" archive-get "$seg" "$W/fetched")
B_MISS=$(fetch_avg 5 pgbackrest --config="$BCONF" --stanza="$STANZA" archive-get "$miss" "$W/fetched")

# ---------------------------------------------------------------------------------------------
# 8. Report
# ---------------------------------------------------------------------------------------------
ratio() { awk -v b="$1" -v c="$2" 'BEGIN {if (c > 0) printf "%.2f", b / c; else print "-"}'; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
cpu() { awk -v u="$(tfield "$1" 2)" -v s="$(tfield "$1" 3)" 'BEGIN {printf "%.2f", u + s}'; }
rss() { awk -v k="$(tfield "$1" 4)" 'BEGIN {printf "%.0f", k / 1024}'; }

echo
echo "PostgreSQL recovery: coffer vs pgBackRest ($(date -u +%Y-%m-%d), $(nproc) CPUs, load average now $(cut -d' ' -f1-3 /proc/loadavg))"
echo "cluster: pgbench scale $SCALE, database $(mib "$DB_BYTES") MiB; WAL after the backups $(mib "$done_b") MiB"
echo
printf '%-40s %14s %14s %8s\n' "" coffer pgbackrest "ratio"
row() { printf '%-40s %14s %14s %8s\n' "$1" "$2" "$3" "${4:-}"; }
row "base backup, wall s" "$(tfield "$LOGS/coffer-backup.time" 1)" "$(tfield "$LOGS/pgbackrest-backup.time" 1)" \
  "$(ratio "$(tfield "$LOGS/pgbackrest-backup.time" 1)" "$(tfield "$LOGS/coffer-backup.time" 1)")"
row "base backup, CPU s (user+sys)" "$(cpu "$LOGS/coffer-backup.time")" "$(cpu "$LOGS/pgbackrest-backup.time")"
row "base backup in repository, MiB" "$(mib "$C_BACKUP_BYTES")" "$(mib "$B_BACKUP_BYTES")"
row "repository at the end (+ WAL), MiB" "$(mib "$C_REPO_BYTES")" "$(mib "$B_REPO_BYTES")"
row "restore (files in place), wall s" "$C_RESTORE" "$B_RESTORE" "$(ratio "$B_RESTORE" "$C_RESTORE")"
row "replay until promoted, wall s" "$C_REPLAY" "$B_REPLAY" "$(ratio "$B_REPLAY" "$C_REPLAY")"
row "total, wall s" "$C_TOTAL" "$B_TOTAL" "$(ratio "$B_TOTAL" "$C_TOTAL")"
row "restore command, CPU s (user+sys)" "$(cpu "$LOGS/coffer-restore.time")" "$(cpu "$LOGS/pgbackrest-restore.time")"
row "restore command, peak RSS MiB" "$(rss "$LOGS/coffer-restore.time")" "$(rss "$LOGS/pgbackrest-restore.time")"
row "files fetched by restore_command" "$C_FILES" "$B_FILES"
row "one restore_command call, segment, s" "$C_FETCH" "$B_FETCH" "$(ratio "$B_FETCH" "$C_FETCH")"
row "one restore_command call, missing, s" "$C_MISS" "$B_MISS" "$(ratio "$B_MISS" "$C_MISS")"
row "  coffer call, segment: password/key, s" "$C_FETCH_PW / $C_FETCH_KEY" ""
echo
echo "ratio = pgbackrest time / coffer time (>1: coffer is faster)."
echo "coffer: 'pg restore --latest --start' timed as a whole (total); replay is its recovery_seconds"
echo "  (pg_ctl start to promotion; extraction took ${C_EXTRACT:-?} s); restore = total - replay."
echo "pgBackRest: 'restore --type=default' timed (restore); then pg_ctl -w start and a"
echo "  pg_is_in_recovery() poll every 0.1 s until promotion (replay), as coffer's --start does."
echo "coffer credential for restore_command: $AUTH file (BENCH_PG_AUTH)"
echo "coffer restore_command:     $C_RESTORE_CMD"
echo "pgBackRest restore_command: $B_RESTORE_CMD"
echo "logs: $LOGS"
if [ "$FAILED" -ne 0 ]; then
  echo "RESULT: verification FAILED"
  exit 1
fi
echo "RESULT: both restored clusters hold the expected state"
