# pg_lib.sh - throwaway PostgreSQL clusters for the end-to-end tests: install the server if
# it is missing, initdb on 127.0.0.1 with a private socket directory, start, stop, psql.
#
# Source it after lib.sh. PostgreSQL refuses to run as root, so as root every server
# program runs as the OS user "postgres" (runuser); servers get a clean environment (no
# COFFER_* variables), as a real server would. Every server started is stopped at exit.
#
#   pg_require            find or install PostgreSQL; skip (exit 77) or fail when impossible
#   pg_init NAME [CONF]   initdb $PGROOT/NAME on a free port (PG_PORT[NAME]); CONF lines are
#                         appended to postgresql.conf
#   pg_start NAME / pg_stop NAME [MODE]
#   pg_sql NAME SQL       psql -At as postgres against cluster NAME (exit status of psql)
#   as_pg CMD...          run a command as the postgres user (or directly when not root)

PGROOT="$TMP/pg"
PGBIN=""
declare -A PG_PORT=()
PG_RUNNING=()
# Each test script starts from its own block of 40 ports (by a hash of its name), so tests
# running side by side do not pick the same free port before either server has bound it.
PG_NEXT_PORT=${PG_PORT_BASE:-$((54329 + ($(basename "$0" | cksum | cut -d' ' -f1) % 100) * 40))}

# pg_skip REASON: PostgreSQL is unavailable here: skip, unless CI requires it.
pg_skip() { db_skip postgres "$1"; }

as_pg() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

_pg_find_bin() {
    local d best=""
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] && best=$d
    done
    if [[ -z "$best" ]] && command -v initdb >/dev/null 2>&1; then
        best=$(dirname "$(command -v initdb)")
    fi
    PGBIN=$best
}

pg_require() {
    _pg_find_bin
    if [[ -z "$PGBIN" && $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "# installing PostgreSQL (apt-get)" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q -o DPkg::Lock::Timeout=120 </dev/null >/dev/null 2>&1
        apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=120 \
            postgresql postgresql-client </dev/null >/dev/null 2>&1
        _pg_find_bin
    fi
    [[ -n "$PGBIN" ]] || pg_skip "initdb/pg_ctl not found and not installable"
    if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
        pg_skip "running as root but there is no 'postgres' user"
    fi
    for p in pg_basebackup psql pg_dump pg_restore; do
        command -v "$p" >/dev/null 2>&1 || [[ -x "$PGBIN/$p" ]] || pg_skip "$p not found"
    done
    # the client programs of the same version first (Debian's wrappers pick one anyway)
    export PATH="$PGBIN:$PATH"
    mkdir -p "$PGROOT"
    [[ $(id -u) -eq 0 ]] && chown postgres: "$PGROOT"
    chmod 0755 "$PGROOT"
    # postgres cannot read root's working directory
    cd /tmp || true
}

_pg_freeport() {
    local p=$1
    while ss -Hltn "sport = :$p" 2>/dev/null | grep -q . ||
        [[ -e "$PGROOT/sock/.s.PGSQL.$p" ]]; do
        p=$((p + 1))
    done
    echo "$p"
}

# pg_init NAME [CONF_LINE...]
pg_init() {
    local name=$1
    shift
    local port
    port=$(_pg_freeport "$PG_NEXT_PORT")
    PG_NEXT_PORT=$((port + 1))
    PG_PORT[$name]=$port
    as_pg mkdir -p "$PGROOT/sock"
    if ! as_pg "$PGBIN/initdb" -D "$PGROOT/$name" -U postgres -A trust --no-locale -E UTF8 \
        --no-sync >"$PGROOT/$name.initdb.log" 2>&1; then
        cat "$PGROOT/$name.initdb.log" >&2
        return 1
    fi
    {
        echo "# ---- test settings ----"
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = '$PGROOT/sock'"
        echo "wal_level = replica"
        echo "max_wal_senders = 4"
        echo "logging_collector = off"
        echo "fsync = off"
        local l
        for l in "$@"; do echo "$l"; done
    } | as_pg tee -a "$PGROOT/$name/postgresql.conf" >/dev/null
}

# pg_start NAME: start and wait until it accepts connections
pg_start() {
    local name=$1
    if ! as_pg env -i PATH="/usr/local/bin:/usr/bin:/bin" LC_ALL=C TZ=UTC \
        "$PGBIN/pg_ctl" -D "$PGROOT/$name" -l "$PGROOT/$name.log" -w -t 60 start >/dev/null 2>&1; then
        echo "cannot start PostgreSQL cluster $name:" >&2
        tail -n 20 "$PGROOT/$name.log" >&2
        return 1
    fi
    PG_RUNNING+=("$PGROOT/$name")
}

# pg_stop NAME [MODE]
pg_stop() {
    as_pg "$PGBIN/pg_ctl" -D "$PGROOT/$1" -m "${2:-fast}" -w -t 60 stop >/dev/null 2>&1
}

# pg_port_of DIR: the port a (restored) data directory's server listens on
pg_port_of() {
    sed -n 4p "$1/postmaster.pid" 2>/dev/null
}

# pg_sql NAME SQL / pg_sql_port PORT SQL
pg_sql_port() {
    as_pg psql -X -q -v ON_ERROR_STOP=1 -h "$PGROOT/sock" -p "$1" -U postgres -d "${PGDB:-postgres}" \
        -At -c "$2"
}
pg_sql() {
    pg_sql_port "${PG_PORT[$1]}" "$2"
}

# Stop every server whose data directory has a postmaster.pid (run from the EXIT trap).
pg_stop_all() {
    set +e
    local d
    for d in "$PGROOT"/*/; do
        d=${d%/}
        if [[ -f "$d/postmaster.pid" ]]; then
            as_pg "$PGBIN/pg_ctl" -D "$d" -m immediate -w -t 30 stop >/dev/null 2>&1 ||
                kill -9 "$(head -n 1 "$d/postmaster.pid")" 2>/dev/null
        fi
    done
}
trap 'pg_stop_all; _cleanup' EXIT
