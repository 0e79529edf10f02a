#!/usr/bin/env bash
# compare.sh - comparative benchmark: coffer vs restic vs BorgBackup on one deterministic
# mixed dataset. See bench/README.md for the details and caveats.
#
# Usage (as root, Debian 12, no terminal needed):
#   bash bench/compare.sh
# Environment:
#   BENCH_TOOLS    tools to run, in order (default "coffer restic borg")
#   BENCH_SIZE_MB  dataset size budget in MiB (default 1024)
#   BENCH_DIR      work dir (default <repo>/bench/work); dataset, repos, logs, results.json
#   COFFER_BIN     coffer binary to use; if unset, coffer is built with the "release" preset
# Exit status: 0 only if every selected tool passed every step (including restore verification).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
BENCH_TOOLS=${BENCH_TOOLS:-"coffer restic borg"}
BENCH_SIZE_MB=${BENCH_SIZE_MB:-1024}
BENCH_DIR=${BENCH_DIR:-"$SCRIPT_DIR/work"}
GEN_VERSION=1   # bump when the dataset generator changes, so old datasets are regenerated

die() { echo "compare.sh: $*" >&2; exit 2; }
log() { echo "== $*"; }

case "$BENCH_SIZE_MB" in
  ''|*[!0-9]*) die "BENCH_SIZE_MB must be a whole number of MiB (got '$BENCH_SIZE_MB')" ;;
esac
[ "$BENCH_SIZE_MB" -ge 16 ] || die "BENCH_SIZE_MB must be at least 16"
read -r -a TOOLS <<<"$BENCH_TOOLS"
[ ${#TOOLS[@]} -gt 0 ] || die "BENCH_TOOLS is empty"
for t in "${TOOLS[@]}"; do
  case "$t" in coffer|restic|borg) ;; *) die "unknown tool '$t' in BENCH_TOOLS (coffer, restic, borg)" ;; esac
done
has_tool() { local t; for t in "${TOOLS[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }

mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
DATA_PARENT=$BENCH_DIR/data
DNAME=benchdata
DATA=$DATA_PARENT/$DNAME
STAMP=$BENCH_DIR/dataset.stamp
UNDO=$BENCH_DIR/undo
REPOS=$BENCH_DIR/repos
RESTORES=$BENCH_DIR/restore
CACHES=$BENCH_DIR/cache
LOGS=$BENCH_DIR/logs
RESULTS_TSV=$BENCH_DIR/results.tsv
META_TSV=$BENCH_DIR/meta.tsv
RESULTS_JSON=$BENCH_DIR/results.json

# ---------------------------------------------------------------------------------------------
# 1. Dependencies
# ---------------------------------------------------------------------------------------------
need=()
[ -x /usr/bin/time ] || need+=(time)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -x /usr/bin/python3 ] || command -v python3 >/dev/null 2>&1 || need+=(python3)
has_tool restic && { command -v restic >/dev/null 2>&1 || need+=(restic); }
has_tool borg && { command -v borg >/dev/null 2>&1 || need+=(borgbackup); }
if [ ${#need[@]} -gt 0 ]; then
  log "installing missing packages: ${need[*]}"
  [ "$(id -u)" -eq 0 ] || die "need root to install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=120 update </dev/null
  apt-get -o DPkg::Lock::Timeout=120 install -y --no-install-recommends "${need[@]}" </dev/null
fi
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=$(command -v python3); fi

# ---------------------------------------------------------------------------------------------
# Python helper: dataset generation, the 1% change (and its undo), the report.
# ---------------------------------------------------------------------------------------------
PY_HELPER=$(cat <<'PYEOF'
import glob, json, os, random, shutil, stat, sys, time

def walk(top):
    """Regular files and symlinks under top, in sorted (deterministic) order: (path, size)."""
    if os.path.islink(top) or not os.path.isdir(top):
        return
    for dirpath, dirs, files in os.walk(top):
        dirs.sort()
        for name in sorted(files):
            p = os.path.join(dirpath, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield p, st.st_size
            elif stat.S_ISLNK(st.st_mode):
                yield p, 0

def cmd_sysfiles(budget, listfile):
    # Phase 1: each primary group gets a quarter of the budget, so small datasets still mix
    # docs, man pages, headers and Python sources. Phase 2: fill what is left, primary groups
    # first, then a few more system trees. Files are taken in sorted path order; a file that
    # would overshoot the budget is skipped.
    budget = int(budget)
    primary = [["/usr/share/doc"], ["/usr/share/man"], ["/usr/include"],
               sorted(glob.glob("/usr/lib/python3*"))]
    extra = [sorted(glob.glob("/usr/share/perl*")), ["/usr/share/locale"], ["/usr/share"],
             ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu"], ["/usr/bin"], ["/usr/lib"]]
    chosen, seen, total = [], set(), 0
    quota = budget // len(primary)
    for group in primary:
        used = 0
        for root in group:
            for p, sz in walk(root):
                if p in seen or used + sz > quota or total + sz > budget:
                    continue
                seen.add(p); chosen.append(p); used += sz; total += sz
    for group in primary + extra:
        for root in group:
            if total >= budget:
                break
            for p, sz in walk(root):
                if p in seen or total + sz > budget:
                    continue
                seen.add(p); chosen.append(p); total += sz
    with open(listfile, "wb") as f:
        for p in chosen:
            f.write(os.fsencode(p.lstrip("/")) + b"\0")   # relative to /: see cp --parents below
    print(total, len(chosen))

# --- SQL dump --------------------------------------------------------------------------------
FIRST = ("james mary robert patricia john jennifer michael linda david elizabeth william barbara "
         "richard susan joseph jessica thomas sarah charles karen chris nancy daniel lisa matthew "
         "betty anthony margaret mark sandra donald ashley steven kimberly paul emily andrew donna "
         "joshua michelle kenneth carol kevin amanda brian melissa george deborah timothy stephanie").split()
LAST = ("smith johnson williams brown jones garcia miller davis rodriguez martinez hernandez lopez "
        "gonzalez wilson anderson thomas taylor moore jackson martin lee perez thompson white harris "
        "sanchez clark ramirez lewis robinson walker young allen king wright scott torres nguyen hill "
        "flores green adams nelson baker hall rivera campbell mitchell carter roberts").split()
WORDS = ("the of and to in is for on with as by at from that this be are or an it was not but which "
         "have has had were can will all more one about there their when use used other into time only "
         "new some these may than then first any out like over also after such most make many through "
         "well where much before must two between both under same each because while should those very "
         "good high long great little own old right big small large next early young important few "
         "public bad able back system data order user account service product value item price total "
         "status report update create delete record table index query server client network request "
         "response error result process support customer payment invoice shipping address region "
         "country store stock quantity discount tax note").split()
DOMAINS = "example.com mail.example.org corp.example.net shop.example.io gmail.example yahoo.example".split()
CITIES = ("Springfield Riverside Franklin Greenville Bristol Clinton Fairview Salem Madison Georgetown "
          "Arlington Ashland Dover Oxford Jackson Burlington Manchester Milton Newport Auburn").split()
STREETS = "Main Oak Pine Maple Cedar Elm Washington Lake Hill Park Walnut Sunset Lincoln Jackson Church River".split()
STATUS = ["pending", "paid", "shipped", "delivered", "cancelled", "refunded"]
METHODS = ["card", "paypal", "bank_transfer", "voucher", "cash"]
EVTYPES = ["page_view", "click", "add_to_cart", "checkout", "login", "logout", "search", "signup"]
UAS = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
       "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
       "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
       "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"]

def ts(r):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(1600000000 + r.randrange(100000000)))

def row_users(r, i):
    f = r.choice(FIRST); l = r.choice(LAST)
    return (f"INSERT INTO users (id, username, email, full_name, created_at, status, balance) VALUES "
            f"({i}, '{f}{l[:3]}{r.randrange(1000)}', '{f}.{l}{r.randrange(100)}@{r.choice(DOMAINS)}', "
            f"'{f.title()} {l.title()}', '{ts(r)}', '{r.choice(('active', 'active', 'active', 'disabled', 'pending'))}', "
            f"{r.randrange(1000000) / 100:.2f});\n")
def row_orders(r, i):
    return (f"INSERT INTO orders (id, user_id, created_at, status, total, currency, ship_street, ship_city, ship_zip) VALUES "
            f"({i}, {r.randrange(1, 500000)}, '{ts(r)}', '{r.choice(STATUS)}', {r.randrange(100, 500000) / 100:.2f}, 'EUR', "
            f"'{r.randrange(1, 9999)} {r.choice(STREETS)} St', '{r.choice(CITIES)}', '{r.randrange(10000, 99999)}');\n")
def row_items(r, i):
    return (f"INSERT INTO order_items (id, order_id, product_id, quantity, unit_price, discount) VALUES "
            f"({i}, {r.randrange(1, 2000000)}, {r.randrange(1, 50000)}, {r.randrange(1, 10)}, "
            f"{r.randrange(99, 99999) / 100:.2f}, {r.choice((0, 0, 0, 5, 10, 15))});\n")
def row_products(r, i):
    desc = " ".join(r.choices(WORDS, k=r.randrange(8, 30)))
    return (f"INSERT INTO products (id, sku, name, description, price, stock) VALUES "
            f"({i}, 'SKU-{r.randrange(16 ** 8):08X}', '{r.choice(WORDS).title()} {r.choice(WORDS)} {r.choice(WORDS)}', "
            f"'{desc}', {r.randrange(99, 99999) / 100:.2f}, {r.randrange(0, 1000)});\n")
def row_events(r, i):
    return (f"INSERT INTO events (id, user_id, ts, type, ip, user_agent, payload) VALUES "
            f"({i}, {r.randrange(1, 500000)}, '{ts(r)}', '{r.choice(EVTYPES)}', "
            f"'{r.randrange(1, 255)}.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(256)}', '{r.choice(UAS)}', "
            f"'{{\"page\": \"/{r.choice(WORDS)}/{r.randrange(1000)}\", \"ref\": \"{r.choice(WORDS)}\", \"ms\": {r.randrange(5000)}}}');\n")
def row_payments(r, i):
    return (f"INSERT INTO payments (id, order_id, amount, method, txn_id, created_at) VALUES "
            f"({i}, {r.randrange(1, 2000000)}, {r.randrange(100, 500000) / 100:.2f}, '{r.choice(METHODS)}', "
            f"'{r.getrandbits(128):032x}', '{ts(r)}');\n")
def row_sessions(r, i):
    return (f"INSERT INTO sessions (token, user_id, created_at, expires_at, remember) VALUES "
            f"('{r.getrandbits(160):040x}', {r.randrange(1, 500000)}, '{ts(r)}', '{ts(r)}', {r.choice(('true', 'false'))});\n")
def row_audit(r, i):
    return (f"INSERT INTO audit_log (id, ts, actor, action, object, details) VALUES "
            f"({i}, '{ts(r)}', '{r.choice(FIRST)}.{r.choice(LAST)}', '{r.choice(('create', 'update', 'delete', 'login', 'export'))}', "
            f"'{r.choice(('order', 'user', 'product', 'invoice'))}:{r.randrange(1, 2000000)}', "
            f"'{' '.join(r.choices(WORDS, k=r.randrange(4, 16)))}');\n")

TABLES = [("users", row_users), ("orders", row_orders), ("order_items", row_items),
          ("products", row_products), ("events", row_events), ("payments", row_payments),
          ("sessions", row_sessions), ("audit_log", row_audit)]

def write_rows(f, r, fn, first_id, nbytes):
    n, i, buf = 0, first_id, []
    while n < nbytes:
        s = fn(r, i); i += 1; n += len(s); buf.append(s)
        if len(buf) >= 4096:
            f.write("".join(buf)); buf = []
    f.write("".join(buf))
    return n, i

def cmd_sql(outdir, budget):
    budget = int(budget)
    os.makedirs(outdir, exist_ok=True)
    per = budget // len(TABLES)
    for k, (name, fn) in enumerate(TABLES):
        r = random.Random(42 * 1000 + k)
        with open(os.path.join(outdir, name + ".sql"), "w") as f:
            head = (f"-- coffer benchmark synthetic dump, table {name}\n-- deterministic (seed 42)\n"
                    f"SET client_encoding = 'UTF8';\nBEGIN;\n")
            f.write(head)
            write_rows(f, r, fn, 1, per - len(head))

# --- many small files ------------------------------------------------------------------------
def small_content(r, kind, size):
    if kind == "bin":
        return r.randbytes(size)
    if kind == "json":
        parts, n = ["{\n"], 2
        while n < size:
            s = f'  "{r.choice(WORDS)}_{r.randrange(100)}": {r.choice([str(r.randrange(100000)), chr(34) + r.choice(WORDS) + chr(34), "true", "null"])},\n'
            parts.append(s); n += len(s)
        return "".join(parts).encode()[:max(size - 2, 0)] + b"}\n"[:size]
    if kind == "csv":
        parts, n = [], 0
        while n < size:
            s = f"{r.randrange(1, 10 ** 6)},{r.choice(FIRST)},{r.choice(LAST)},{r.randrange(10 ** 5) / 100:.2f},{ts(r)}\n"
            parts.append(s); n += len(s)
        return "".join(parts).encode()[:size]
    parts, n = [], 0
    while n < size:
        s = " ".join(r.choices(WORDS, k=r.randrange(4, 14))) + ".\n"
        parts.append(s); n += len(s)
    return "".join(parts).encode()[:size]

def cmd_small(outdir, budget):
    budget = int(budget)
    r = random.Random(42)
    count = max(100, budget // 4096)      # sizes are uniform in 0..8192, mean 4096
    written, total = [], 0
    for i in range(count):
        d = os.path.join(outdir, f"d{i % 32:02d}", f"s{(i // 32) % 16:02d}")
        os.makedirs(d, exist_ok=True)
        size = r.randrange(0, 8193)
        x = r.random()
        if x < 0.05 and written:                      # 5% duplicates of an earlier file
            data = r.choice(written); ext = "dup"
        else:
            kind = "txt" if x < 0.50 else "json" if x < 0.70 else "csv" if x < 0.85 else "bin"
            data = small_content(r, kind, size); ext = kind
        with open(os.path.join(d, f"f{i:06d}.{ext}"), "wb") as f:
            f.write(data)
        if len(written) < 512:
            written.append(data)
        total += len(data)
    print(total, count)

# --- the deterministic ~1% change, with undo -------------------------------------------------
def cmd_change(data, undo, dataset_bytes, regions_out):
    dataset_bytes = int(dataset_bytes)
    os.makedirs(os.path.join(undo, "files"), exist_ok=True)
    man = {"truncate": {}, "copies": {}, "regions": []}
    sql_targets = ["orders", "events", "audit_log"]
    sql_paths = [os.path.join(data, "sql", t + ".sql") for t in sql_targets]
    for p in sql_paths:
        man["truncate"][p] = os.path.getsize(p)
    small = [p for p, _ in walk(os.path.join(data, "small"))]
    rewrite = [p for i, p in enumerate(small) if i % 100 == 7]
    for j, p in enumerate(rewrite):
        c = os.path.join(undo, "files", f"{j:06d}")
        shutil.copyfile(p, c)
        man["copies"][p] = c
    rnd = os.path.join(data, "random", "random.bin")
    rsize = os.path.getsize(rnd)
    rlen = max(4096, (rsize // 1000) // 4096 * 4096)       # 10 regions x 0.1% = 1% of the file
    regions = []
    for k in range(10):
        off = ((2 * k + 1) * rsize // 20) // 4096 * 4096
        if off + rlen > rsize:
            continue
        c = os.path.join(undo, "files", f"region{k}")
        with open(rnd, "rb") as f, open(c, "wb") as g:
            f.seek(off); g.write(f.read(rlen))
        regions.append((off, rlen))
        man["regions"].append([rnd, off, rlen, c])
    with open(os.path.join(undo, "manifest.json"), "w") as f:
        json.dump(man, f)
    open(os.path.join(undo, "APPLIED"), "w").close()       # from here on, revert is needed
    # Apply: append ~0.7% of the dataset as new INSERT rows, rewrite every 100th small file
    # (~0.1%); the shell then overwrites 1% of random.bin (~0.2%) => ~1% of the dataset bytes.
    r = random.Random(4242)
    appended = 0
    fns = dict(TABLES)
    for t, p in zip(sql_targets, sql_paths):
        with open(p, "a") as f:
            n, _ = write_rows(f, r, fns[t], 10 ** 8, dataset_bytes * 7 // 1000 // len(sql_targets))
            appended += n
    rewritten = 0
    for p in rewrite:
        d = small_content(r, "txt", r.randrange(0, 8193))
        with open(p, "wb") as f:
            f.write(d)
        rewritten += len(d)
    with open(regions_out, "w") as f:
        for off, ln in regions:
            f.write(f"{off} {ln}\n")
    print(appended, len(rewrite), rewritten, sum(l for _, l in regions))

def cmd_revert(undo):
    with open(os.path.join(undo, "manifest.json")) as f:
        man = json.load(f)
    for p, sz in man["truncate"].items():
        os.truncate(p, sz)
    for p, c in man["copies"].items():
        shutil.copyfile(c, p)
    for p, off, ln, c in man["regions"]:
        with open(c, "rb") as g, open(p, "r+b") as f:
            f.seek(off); f.write(g.read())
    shutil.rmtree(undo)

# --- report ----------------------------------------------------------------------------------
STEPS = [("init", "init"), ("backup_initial", "backup (initial)"), ("backup_unchanged", "backup (unchanged)"),
         ("backup_1pct", "backup (1% change)"), ("restore", "restore (full)"), ("check_read_data", "check --read-data")]
MiB = 1048576.0

def cmd_report(results_tsv, meta_tsv, out_json):
    meta = {}
    with open(meta_tsv) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("\t")
            meta[k] = v
    tools = meta["tools"].split()
    res = {t: {} for t in tools}
    repo = {t: None for t in tools}
    with open(results_tsv) as f:
        for line in f:
            c = line.rstrip("\n").split("\t")
            if c[0] == "step":
                _, tool, step, status, wall, usr, sys_, rss, note = c
                e = {"status": status, "note": note}
                if wall != "":
                    e.update(wall_s=float(wall), user_s=float(usr), sys_s=float(sys_),
                             cpu_s=round(float(usr) + float(sys_), 2), max_rss_kib=int(rss))
                res[tool][step] = e
            elif c[0] == "repo":
                _, tool, when, nbytes = c
                res[tool].setdefault("repo_size_bytes_after", {})[when] = int(nbytes)
                if when == "final":
                    repo[tool] = int(nbytes)
    dbytes = int(meta["dataset_bytes"])
    for t in tools:
        for s, _ in STEPS:
            e = res[t].get(s)
            if e and "wall_s" in e and s != "init" and e["status"] == "ok":
                e["mib_per_s"] = round(dbytes / MiB / e["wall_s"], 1) if e["wall_s"] > 0 else None

    def ok(t, s):
        e = res.get(t, {}).get(s)
        return e if e and e["status"] == "ok" and "wall_s" in e else None

    ratios = {}
    if "coffer" in tools:
        for other in ("restic", "borg"):
            if other in tools:
                d = {}
                for s, _ in STEPS:
                    a, b = ok(other, s), ok("coffer", s)
                    d[s] = round(a["wall_s"] / b["wall_s"], 2) if a and b and b["wall_s"] > 0 else None
                ratios[f"speedup_vs_{other}"] = d
        if "restic" in tools:
            d = {}
            for s, _ in STEPS:
                a, b = ok("coffer", s), ok("restic", s)
                d[s] = round(a["max_rss_kib"] / b["max_rss_kib"], 2) if a and b and b["max_rss_kib"] > 0 else None
            ratios["rss_coffer_over_restic"] = d
        for other in ("borg", "restic"):
            if other in tools:
                a, b = repo.get("coffer"), repo.get(other)
                ok_c = ok("coffer", "backup_1pct") is not None
                ratios[f"repo_size_coffer_over_{other}"] = round(a / b, 3) if ok_c and a and b else None

    out = {"machine": {k: meta[k] for k in ("nproc", "cpu_model", "kernel", "mem_total", "date") if k in meta},
           "versions": {t: meta.get("version_" + t, "") for t in tools},
           "warm_cache": True,
           "mib": "1 MiB = 1048576 bytes; mib_per_s = dataset bytes / wall seconds for every step (also the 1% change step)",
           "dataset": {"path": meta["dataset_path"], "bytes": dbytes, "files": int(meta["dataset_files"]),
                       "dirs": int(meta["dataset_dirs"]), "symlinks": int(meta["dataset_symlinks"]),
                       "size_budget_mib": int(meta["size_mb"]),
                       "parts_bytes": json.loads(meta["dataset_parts"]),
                       "change_bytes": int(meta.get("change_bytes", "0") or 0)},
           "tools": tools, "results": res, "repo_size_bytes": repo, "ratios": ratios,
           "failed": meta.get("failed", "") != "0"}
    with open(out_json, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")

    def fmt(v, spec):
        if v is None:   # keep the column width of spec, e.g. "8.2f" -> 8
            w = spec.split(".")[0]
            return "-".rjust(int(w)) if w.isdigit() else "-"
        return format(v, spec)
    print()
    print(f"Machine : {meta.get('nproc')} CPUs, {meta.get('cpu_model')}, kernel {meta.get('kernel')}, RAM {meta.get('mem_total')}")
    for t in tools:
        print(f"Version : {t:7s} {meta.get('version_' + t, '')}")
    print(f"Dataset : {dbytes} bytes ({dbytes / MiB:.1f} MiB), {meta['dataset_files']} files, "
          f"{meta['dataset_dirs']} dirs, {meta['dataset_symlinks']} symlinks; 1% step changed {out['dataset']['change_bytes']} bytes")
    print("NOTE    : warm page cache (nothing dropped between runs). MiB/s = dataset bytes / wall time for")
    print("          every step, including the 1% change step and check (not bytes actually read or written).")
    print()
    hdr = f"{'step':20s} {'tool':7s} {'status':6s} {'wall s':>8s} {'MiB/s':>8s} {'CPU s':>8s} {'RSS MiB':>8s}"
    print(hdr); print("-" * len(hdr))
    for s, label in STEPS:
        for t in tools:
            e = res[t].get(s, {"status": "SKIP"})
            has = "wall_s" in e
            print(f"{label:20s} {t:7s} {e['status']:6s} {fmt(e.get('wall_s'), '8.2f') if has else '       -'} "
                  f"{fmt(e.get('mib_per_s'), '8.1f') if has and s != 'init' else '       -'} "
                  f"{fmt(e.get('cpu_s'), '8.2f') if has else '       -'} "
                  f"{fmt(e['max_rss_kib'] / 1024, '8.1f') if has else '       -'}"
                  + (f"   ({e['note']})" if e.get("note") else ""))
    print()
    print("Repository size (du -sb, after all steps):")
    for t in tools:
        b = repo.get(t)
        print(f"  {t:7s} " + ("-" if b is None else f"{b:>13d} bytes  {b / MiB:9.1f} MiB  ({b / dbytes * 100:.1f}% of dataset)"))
    print("Repository size after each backup, MiB (initial / unchanged / 1% change):")
    for t in tools:
        a = res[t].get("repo_size_bytes_after", {})
        print(f"  {t:7s} " + " / ".join("-" if s not in a else f"{a[s] / MiB:.1f}"
                                        for s in ("backup_initial", "backup_unchanged", "backup_1pct")))
    if ratios:
        print()
        print("coffer ratios (speed-up = other_time / coffer_time, >1 means coffer is faster):")
        cols = [k for k in ratios if isinstance(ratios[k], dict)]
        print(f"  {'step':20s} " + " ".join(f"{c:>24s}" for c in cols))
        for s, label in STEPS:
            print(f"  {label:20s} " + " ".join(f"{fmt(ratios[c][s], '24.2f')}" for c in cols))
        for k, v in ratios.items():
            if not isinstance(v, dict):
                print(f"  {k}: {fmt(v, '.3f')}")
    print()
    print(f"JSON written to {out_json}")

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"sysfiles": cmd_sysfiles, "sql": cmd_sql, "small": cmd_small, "change": cmd_change,
     "revert": cmd_revert, "report": cmd_report}[cmd](*args)
PYEOF
)
py() { "$PY" -c "$PY_HELPER" "$@"; }

# ---------------------------------------------------------------------------------------------
# 2. Dataset
# ---------------------------------------------------------------------------------------------
random_bytes() { # random_bytes PASS N > file : deterministic incompressible bytes
  { openssl enc -aes-256-ctr -pass "pass:$1" -nosalt -pbkdf2 </dev/zero 2>/dev/null || true; } | head -c "$2"
}

revert_change() {
  if [ -e "$UNDO/APPLIED" ]; then
    log "reverting the 1% change (dataset back to its generated state)"
    py revert "$UNDO"
  fi
}

STAMP_WANT="gen=$GEN_VERSION size_mb=$BENCH_SIZE_MB"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_WANT" ] && [ -d "$DATA" ]; then
  revert_change
  log "reusing dataset $DATA ($STAMP_WANT)"
else
  log "generating dataset in $DATA (budget $BENCH_SIZE_MB MiB)"
  rm -rf "$DATA" "$UNDO" "$STAMP"
  mkdir -p "$DATA/sys" "$DATA/sql" "$DATA/random" "$DATA/small"
  B=$((BENCH_SIZE_MB * 1048576))
  t0=$SECONDS
  # (a) system files, ~35%
  read -r sys_bytes sys_files < <(py sysfiles $((B * 35 / 100)) "$BENCH_DIR/sysfiles.list") || true
  [ -n "${sys_files:-}" ] || die "system file selection failed"
  # Relative paths from /: coreutils 9.1 "cp -a --parents" mis-handles absolute sources.
  (cd / && xargs -0 -r -a "$BENCH_DIR/sysfiles.list" cp -a --parents -t "$DATA/sys")
  echo "   (a) system files: $sys_bytes bytes, $sys_files entries"
  # (b) SQL dump text, ~35%
  py sql "$DATA/sql" $((B * 35 / 100))
  echo "   (b) SQL dump    : $(du -sb "$DATA/sql" | cut -f1) bytes"
  # (c) incompressible random data, ~20%
  random_bytes bench $((B * 20 / 100)) >"$DATA/random/random.bin"
  echo "   (c) random      : $(stat -c %s "$DATA/random/random.bin") bytes"
  # (d) many small files, ~10%
  read -r small_bytes small_files < <(py small "$DATA/small" $((B * 10 / 100))) || true
  [ -n "${small_files:-}" ] || die "small file generation failed"
  echo "   (d) small files : $small_bytes bytes, $small_files files"
  [ "$(stat -c %s "$DATA/random/random.bin")" -eq $((B * 20 / 100)) ] || die "random data generation failed"
  sync
  echo "$STAMP_WANT" >"$STAMP"
  log "dataset generated in $((SECONDS - t0)) s"
fi
trap revert_change EXIT

dataset_stats() {
  DATASET_BYTES=$(find "$DATA" -type f -printf '%s\n' | awk '{s += $1} END {printf "%d", s}')
  DATASET_FILES=$(find "$DATA" -type f | wc -l)
  DATASET_DIRS=$(find "$DATA" -type d | wc -l)
  DATASET_LINKS=$(find "$DATA" -type l | wc -l)
}
dataset_stats
part_bytes() { find "$DATA/$1" -type f -printf '%s\n' | awk '{s += $1} END {printf "%d", s}'; }
DATASET_PARTS="{\"system\": $(part_bytes sys), \"sql\": $(part_bytes sql), \"random\": $(part_bytes random), \"small\": $(part_bytes small)}"
log "dataset: $DATASET_BYTES bytes ($(awk -v b="$DATASET_BYTES" 'BEGIN {printf "%.1f", b / 1048576}') MiB)," \
    "$DATASET_FILES files, $DATASET_DIRS dirs, $DATASET_LINKS symlinks"
echo "   parts (bytes): $DATASET_PARTS"

# ---------------------------------------------------------------------------------------------
# 3. Tools, environment, machine
# ---------------------------------------------------------------------------------------------
rm -rf "$REPOS" "$RESTORES" "$CACHES" "$LOGS" "$RESULTS_TSV" "$RESULTS_JSON"
mkdir -p "$REPOS" "$RESTORES" "$CACHES/restic" "$CACHES/borg" "$CACHES/borg-config" "$CACHES/xdg" "$LOGS"
: >"$RESULTS_TSV"

export COFFER_PASSWORD=bench RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench
export COFFER_REPO=$REPOS/coffer
export RESTIC_CACHE_DIR=$CACHES/restic
export BORG_CACHE_DIR=$CACHES/borg BORG_CONFIG_DIR=$CACHES/borg-config
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export BORG_DISPLAY_PASSPHRASE=no
export XDG_CACHE_HOME=$CACHES/xdg   # for coffer, in case it keeps a cache there

declare -A DEAD=()      # tool -> reason; remaining steps of a dead tool are skipped
FAILED=0

if has_tool coffer; then
  if [ -z "${COFFER_BIN:-}" ]; then
    log "building coffer (release preset)"
    if (cd "$ROOT" && cmake --preset release -S "$ROOT" && cmake --build "$ROOT/build/release" -j2) \
         >"$LOGS/coffer-build.log" 2>&1; then
      COFFER_BIN=$ROOT/build/release/coffer
    else
      echo "!! coffer build FAILED; last lines of $LOGS/coffer-build.log:"
      tail -n 20 "$LOGS/coffer-build.log" | sed 's/^/   | /'
      DEAD[coffer]="build failed"
      COFFER_BIN=$ROOT/build/release/coffer
    fi
  fi
  case "$COFFER_BIN" in /*) ;; *) COFFER_BIN=$(pwd)/$COFFER_BIN ;; esac
  if [ -z "${DEAD[coffer]:-}" ] && [ ! -x "$COFFER_BIN" ]; then
    echo "!! coffer binary $COFFER_BIN is missing or not executable"
    DEAD[coffer]="no binary"
  fi
  if [ -z "${DEAD[coffer]:-}" ]; then
    # Run a private copy, so a concurrent rebuild of the tree cannot swap the binary mid-run.
    mkdir -p "$BENCH_DIR/bin"
    cp -f "$COFFER_BIN" "$BENCH_DIR/bin/coffer"
    log "coffer binary: $COFFER_BIN (copied to $BENCH_DIR/bin/coffer)"
    COFFER_BIN=$BENCH_DIR/bin/coffer
  fi
fi

version_of() {
  local v=""
  case "$1" in
    coffer) v=$("$COFFER_BIN" version 2>&1 </dev/null | head -n 1) || true ;;
    restic) v=$(restic version 2>&1 </dev/null | head -n 1) || true ;;
    borg) v=$(borg --version 2>&1 </dev/null | head -n 1) || true ;;
  esac
  echo "${v:-unknown}"
}
cpu_model=$(grep -m1 -E '^(model name|Model|cpu model)' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') || true
[ -n "$cpu_model" ] || cpu_model=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1) || true
{
  printf 'tools\t%s\n' "${TOOLS[*]}"
  printf 'nproc\t%s\n' "$(nproc)"
  printf 'cpu_model\t%s\n' "${cpu_model:-unknown}"
  printf 'kernel\t%s\n' "$(uname -r)"
  printf 'mem_total\t%s\n' "$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  printf 'date\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  for t in "${TOOLS[@]}"; do printf 'version_%s\t%s\n' "$t" "$(version_of "$t")"; done
  printf 'size_mb\t%s\n' "$BENCH_SIZE_MB"
  printf 'dataset_path\t%s\n' "$DATA"
  printf 'dataset_bytes\t%s\n' "$DATASET_BYTES"
  printf 'dataset_files\t%s\n' "$DATASET_FILES"
  printf 'dataset_dirs\t%s\n' "$DATASET_DIRS"
  printf 'dataset_symlinks\t%s\n' "$DATASET_LINKS"
  printf 'dataset_parts\t%s\n' "$DATASET_PARTS"
} >"$META_TSV"
log "machine: $(nproc) CPUs, ${cpu_model:-unknown}, kernel $(uname -r)"
for t in "${TOOLS[@]}"; do echo "   $t: $(version_of "$t")"; done
log "NOTE: warm-cache runs: nothing is dropped from the page cache (only 'sync' before each timed step)"

# ---------------------------------------------------------------------------------------------
# 4. Steps
# ---------------------------------------------------------------------------------------------
repo_of() { echo "$REPOS/$1"; }
repo_bytes() { if [ -e "$1" ]; then du -sb "$1" | cut -f1; else echo 0; fi; }

# Sets CWD and CMD for tool $1, step $2.
step_cmd() {
  local tool=$1 step=$2 r
  r=$(repo_of "$tool")
  CWD=$DATA_PARENT
  case "$tool:$step" in
    coffer:init)             CMD=("$COFFER_BIN" init) ;;
    coffer:backup_*)         CMD=("$COFFER_BIN" backup "$DNAME") ;;
    coffer:restore)          CMD=("$COFFER_BIN" restore latest --target "$RESTORES/coffer") ;;
    coffer:check_read_data)  CMD=("$COFFER_BIN" check --read-data) ;;
    restic:init)             CMD=(restic -r "$r" init) ;;
    restic:backup_*)         CMD=(restic -r "$r" backup "$DNAME") ;;
    restic:restore)          CMD=(restic -r "$r" restore latest --target "$RESTORES/restic") ;;
    restic:check_read_data)  CMD=(restic -r "$r" check --read-data) ;;
    borg:init)               CMD=(borg init -e repokey-blake2 "$r") ;;
    borg:backup_initial)     CMD=(borg create --compression "zstd,3" "$r::s1" "$DNAME") ;;
    borg:backup_unchanged)   CMD=(borg create --compression "zstd,3" "$r::s2" "$DNAME") ;;
    borg:backup_1pct)        CMD=(borg create --compression "zstd,3" "$r::s3" "$DNAME") ;;
    borg:restore)            CWD=$RESTORES/borg; CMD=(borg extract "$r::s3") ;;
    borg:check_read_data)    CMD=(borg check --verify-data "$r") ;;
    *) die "no command for $tool:$step" ;;
  esac
}

record() { # record tool step status wall user sys rss note
  printf 'step\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS_TSV"
}

fail_cell() { # fail_cell tool step message [errfile]
  FAILED=1
  printf '!! %s %s FAILED: %s\n' "$1" "$2" "$3"
  if [ -n "${4:-}" ] && [ -s "$4" ]; then
    echo "   stderr tail ($4):"
    tail -n 15 "$4" | sed 's/^/   | /'
  fi
}

# Locate the restored copy of the dataset inside restore dir $1.
find_restored() {
  local t=$1 c
  for c in "$t/$DNAME" "$t$DATA_PARENT/$DNAME"; do
    [ -d "$c" ] && { echo "$c"; return 0; }
  done
  c=$(find "$t" -type d -name "$DNAME" -printf '%d %p\n' 2>/dev/null | sort -n | head -n 1 | cut -d' ' -f2-) || true
  [ -n "$c" ] && echo "$c"
}

run_step() {
  local tool=$1 step=$2 pfx rc w u s m note="" status=ok
  pfx=$LOGS/$tool-$step
  if [ -n "${DEAD[$tool]:-}" ]; then
    printf '   %-7s %-17s SKIP (%s)\n' "$tool" "$step" "${DEAD[$tool]}"
    record "$tool" "$step" SKIP "" "" "" "" "skipped: ${DEAD[$tool]}"
    FAILED=1
    return 0
  fi
  step_cmd "$tool" "$step"
  if [ "$step" = restore ]; then rm -rf "${RESTORES:?}/$tool"; mkdir -p "$RESTORES/$tool"; fi
  sync
  rc=0
  ( cd "$CWD" && exec /usr/bin/time -f '%e %U %S %M' -o "$pfx.time" "${CMD[@]}" ) \
      >"$pfx.out" 2>"$pfx.err" </dev/null || rc=$?
  w=""; u=""; s=""; m=""
  if [ -s "$pfx.time" ]; then read -r w u s m < <(tail -n 1 "$pfx.time") || true; fi
  case "$w$u$s$m" in ''|*[!0-9.]*) w=""; u=""; s=""; m="" ;; esac
  if [ "$rc" -ne 0 ]; then
    status=FAIL; note="exit status $rc"
    fail_cell "$tool" "$step" "$note" "$pfx.err"
  else
    # Sanity checks, so a stub that exits 0 without doing the work cannot post a time.
    case "$step" in
      init)
        if [ -z "$(ls -A "$(repo_of "$tool")" 2>/dev/null)" ]; then
          status=FAIL; note="exited 0 but created no repository at $(repo_of "$tool")"
          fail_cell "$tool" "$step" "$note" "$pfx.err"
        fi ;;
      backup_initial)
        local rb; rb=$(repo_bytes "$(repo_of "$tool")")
        if [ "$rb" -lt $((DATASET_BYTES / 10)) ]; then
          status=FAIL; note="exited 0 but repository is only $rb bytes"
          fail_cell "$tool" "$step" "$note" "$pfx.err"
        fi ;;
      restore)
        local got; got=$(find_restored "$RESTORES/$tool") || true
        if [ -z "$got" ]; then
          status=FAIL; note="restored tree not found under $RESTORES/$tool"
        elif ! diff -r -q --no-dereference "$DATA" "$got" >"$pfx.diff" 2>&1; then
          status=FAIL; note="restored tree differs from the dataset ($(wc -l <"$pfx.diff") diff lines)"
        fi
        if [ "$status" = FAIL ]; then
          FAILED=1
          echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
          echo "!! $tool RESTORE VERIFICATION FAILED: $note"
          [ -s "$pfx.diff" ] && head -n 20 "$pfx.diff" | sed 's/^/   | /'
          echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        else
          rm -rf "${RESTORES:?}/$tool"     # verified; free the space
        fi ;;
    esac
  fi
  printf '   %-7s %-17s %-4s wall %8s s  user %8s s  sys %8s s  rss %8s KiB%s\n' \
    "$tool" "$step" "$status" "${w:--}" "${u:--}" "${s:--}" "${m:--}" "${note:+  ($note)}"
  record "$tool" "$step" "$status" "$w" "$u" "$s" "$m" "$note"
  if [ "$step" = init ] && [ "$status" != ok ]; then DEAD[$tool]="init failed"; fi
  case "$step" in backup_*)
    printf 'repo\t%s\t%s\t%s\n' "$tool" "$step" "$(repo_bytes "$(repo_of "$tool")")" >>"$RESULTS_TSV" ;;
  esac
  return 0
}

apply_change() {
  local out appended nrew rewritten rbytes off len
  out=$(py change "$DATA" "$UNDO" "$DATASET_BYTES" "$BENCH_DIR/regions.txt")
  read -r appended nrew rewritten rbytes <<<"$out"
  while read -r off len; do
    random_bytes "bench-change-$off" "$len" |
      dd of="$DATA/random/random.bin" bs=4096 seek=$((off / 4096)) conv=notrunc iflag=fullblock status=none
  done <"$BENCH_DIR/regions.txt"
  CHANGE_BYTES=$((appended + rewritten + rbytes))
  printf 'change_bytes\t%s\n' "$CHANGE_BYTES" >>"$META_TSV"
  log "1% change: appended $appended bytes of SQL to 3 files, rewrote $nrew small files ($rewritten bytes)," \
      "overwrote $rbytes bytes of random.bin in place; total $CHANGE_BYTES bytes" \
      "($(awk -v a="$CHANGE_BYTES" -v b="$DATASET_BYTES" 'BEGIN {printf "%.2f", a * 100 / b}')% of the dataset)"
}

for step in init backup_initial backup_unchanged backup_1pct restore check_read_data; do
  [ "$step" = backup_1pct ] && apply_change
  log "step $step"
  for tool in "${TOOLS[@]}"; do
    run_step "$tool" "$step"
  done
done
for tool in "${TOOLS[@]}"; do
  if [ -z "${DEAD[$tool]:-}" ]; then
    printf 'repo\t%s\tfinal\t%s\n' "$tool" "$(repo_bytes "$(repo_of "$tool")")" >>"$RESULTS_TSV"
  fi
done
printf 'failed\t%s\n' "$FAILED" >>"$META_TSV"

# ---------------------------------------------------------------------------------------------
# 5. Report
# ---------------------------------------------------------------------------------------------
py report "$RESULTS_TSV" "$META_TSV" "$RESULTS_JSON"
revert_change
trap - EXIT
if [ "$FAILED" -ne 0 ]; then
  echo "RESULT: at least one tool failed a step (see FAIL/SKIP above; logs in $LOGS)"
  exit 1
fi
echo "RESULT: all steps passed"
