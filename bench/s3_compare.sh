#!/usr/bin/env bash
# s3_compare.sh - coffer vs restic against one S3-compatible server on loopback
# (@20minutes/s3rver, the server of the S3 tests, started by this script and stopped at exit):
# first backup, unchanged re-backup and full restore of one deterministic mixed dataset, side
# by side in one run. Prints wall time, CPU (user+sys), peak RSS and MiB/s per step and tool,
# and coffer's ratios (restic/coffer time: >1 means coffer is faster). See bench/README.md.
#
# Usage (Debian 12, root for apt-get if restic is missing):  bash bench/s3_compare.sh
# Environment:
#   BENCH_SIZE_MB  dataset size in MiB (default 512, at least 16)
#   BENCH_DIR      work dir (default <repo>/bench/work-s3): dataset, server data, logs,
#                  s3_results.json
#   COFFER_BIN     coffer binary; if unset, built with the "release" preset
#   BENCH_TOOLS    default "coffer restic"
# Exit status: 0 only if every step of every tool passed, including the restore comparison.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
BENCH_SIZE_MB=${BENCH_SIZE_MB:-512}
BENCH_DIR=${BENCH_DIR:-"$SCRIPT_DIR/work-s3"}
BENCH_TOOLS=${BENCH_TOOLS:-"coffer restic"}
GEN_VERSION=1

die() { echo "s3_compare.sh: $*" >&2; exit 2; }
case "$BENCH_SIZE_MB" in ''|*[!0-9]*) die "BENCH_SIZE_MB must be a whole number" ;; esac
[ "$BENCH_SIZE_MB" -ge 16 ] || die "BENCH_SIZE_MB must be at least 16"
read -r -a TOOLS <<<"$BENCH_TOOLS"
for t in "${TOOLS[@]}"; do
  case "$t" in coffer|restic) ;; *) die "unknown tool '$t' (coffer, restic)" ;; esac
done

need=()
[ -x /usr/bin/time ] || need+=(time)
command -v python3 >/dev/null 2>&1 || need+=(python3)
[[ " ${TOOLS[*]} " == *" restic "* ]] && ! command -v restic >/dev/null 2>&1 && need+=(restic)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  apt-get update -q -o DPkg::Lock::Timeout=120 </dev/null >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o DPkg::Lock::Timeout=120 "${need[@]}" </dev/null >/dev/null
fi

mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
DATA_PARENT=$BENCH_DIR/data
DATA=$DATA_PARENT/benchdata
LOGS=$BENCH_DIR/logs
RESULTS=$BENCH_DIR/s3_results.tsv

if [ -z "${COFFER_BIN:-}" ]; then
  echo "== building coffer (release)"
  (cd "$ROOT" && cmake --preset release >/dev/null && cmake --build build/release -j"$(nproc)" >/dev/null)
  COFFER_BIN=$ROOT/build/release/coffer
fi
mkdir -p "$BENCH_DIR/bin"
cp "$COFFER_BIN" "$BENCH_DIR/bin/coffer"
COFFER=$BENCH_DIR/bin/coffer

# ---- the dataset: deterministic, regenerated when the size or the generator changes ----
STAMP=$BENCH_DIR/dataset.stamp
if [ "$(cat "$STAMP" 2>/dev/null)" != "$GEN_VERSION $BENCH_SIZE_MB" ]; then
  echo "== generating a $BENCH_SIZE_MB MiB dataset"
  rm -rf "$DATA_PARENT"
  mkdir -p "$DATA"
  python3 - "$DATA" "$BENCH_SIZE_MB" <<'EOF'
# 40% SQL-like text (compresses ~4-6x), 30% incompressible, 20% medium binary files with
# repeated structure, 10% small files (0-8 KiB, 5% duplicates). Seeded: byte-identical runs.
import os, random, sys
root, mib = sys.argv[1], int(sys.argv[2])
budget = mib << 20
r = random.Random(20261122)
os.makedirs(root + "/sql"); os.makedirs(root + "/random"); os.makedirs(root + "/media")
words = ["alpha", "beta", "gamma", "delta", "order", "customer", "invoice", "paid", "open",
         "2026-01-0", "Berlin", "Lyon", "Oslo", "NULL", "true", "false"]
for t in range(8):
    want, n = budget * 40 // 100 // 8, 0
    with open("%s/sql/table%d.sql" % (root, t), "w") as f:
        while n < want:
            line = "INSERT INTO t%d VALUES (%d, '%s', '%s', %d, %.2f);\n" % (
                t, r.randrange(10**9), r.choice(words), r.choice(words) + str(r.randrange(100)),
                r.randrange(10**6), r.random() * 1000)
            f.write(line); n += len(line)
left = budget * 30 // 100
i = 0
while left > 0:
    sz = min(left, 64 << 20)
    with open("%s/random/r%d.bin" % (root, i), "wb") as f:
        for _ in range(sz >> 20):
            f.write(r.randbytes(1 << 20))
        f.write(r.randbytes(sz & ((1 << 20) - 1)))
    left -= sz; i += 1
left = budget * 20 // 100
i = 0
while left > 0:
    sz = min(left, r.randrange(1 << 20, 8 << 20))
    block = r.randbytes(4096)
    with open("%s/media/m%d.dat" % (root, i), "wb") as f:
        w = 0
        while w < sz:
            chunk = block if r.random() < 0.5 else r.randbytes(4096)
            f.write(chunk[: sz - w]); w += len(chunk)
    left -= sz; i += 1
left = budget * 10 // 100
i, prev = 0, b""
while left > 0:
    d = "%s/small/%02d/%02d" % (root, i % 32, (i // 32) % 16)
    os.makedirs(d, exist_ok=True)
    if prev and r.random() < 0.05:
        data = prev
    elif r.random() < 0.5:
        data = (" ".join(r.choice(words) for _ in range(r.randrange(1, 1400)))).encode()
    else:
        data = r.randbytes(r.randrange(0, 8192))
    with open("%s/f%06d" % (d, i), "wb") as f:
        f.write(data)
    prev = data; left -= max(len(data), 1); i += 1
EOF
  echo "$GEN_VERSION $BENCH_SIZE_MB" >"$STAMP"
fi
DATA_BYTES=$(du -sb "$DATA" | cut -f1)
NFILES=$(find "$DATA" -type f | wc -l)

# ---- the server ----
. "$ROOT/tests/conformance/remote/lib.sh"
rl_init bench
set -e
rm -rf "$BENCH_DIR/s3data" "$BENCH_DIR/cache" "$BENCH_DIR/restore" "$LOGS"
mkdir -p "$LOGS" "$BENCH_DIR/cache"
RL_S3_LAX=1 rl_s3rver_start "$BENCH_DIR/s3data" || die "cannot start s3rver: $RL_S3_WHY"
rl_on_exit "rm -rf '$BENCH_DIR/s3data' '$BENCH_DIR/restore'"
rl_s3_env
EP="http://127.0.0.1:$S3_PORT"
echo "== s3rver on 127.0.0.1:$S3_PORT (server data under $BENCH_DIR/s3data)"

export COFFER_PASSWORD=bench RESTIC_PASSWORD=bench
export COFFER_CACHE_DIR=$BENCH_DIR/cache/coffer RESTIC_CACHE_DIR=$BENCH_DIR/cache/restic
unset COFFER_REPO RESTIC_REPOSITORY

repo_of() {
  case "$1" in
    coffer) echo "s3:$EP/coffer-bench/repo" ;;
    restic) echo "s3:$EP/restic-bench/repo" ;;
  esac
}

# run TOOL STEP CMD...: time CMD (cwd: the dataset's parent), record "tool step wall user sys
# rss_kib status" in $RESULTS.
: >"$RESULTS"
FAILED=0
run() {
  local tool=$1 step=$2 st=0
  shift 2
  sync
  (cd "$DATA_PARENT" && /usr/bin/time -f '%e %U %S %M' -o "$LOGS/$tool-$step.time" "$@") \
    >"$LOGS/$tool-$step.out" 2>"$LOGS/$tool-$step.err" </dev/null || st=$?
  if [ "$st" -ne 0 ]; then
    FAILED=1
    echo "!! $tool $step failed (exit $st):"
    tail -n 5 "$LOGS/$tool-$step.err" | sed 's/^/   /'
  fi
  echo "$tool $step $(tail -n 1 "$LOGS/$tool-$step.time") $st" >>"$RESULTS"
  return $st
}

for tool in "${TOOLS[@]}"; do
  repo=$(repo_of "$tool")
  case "$tool" in
    coffer)
      run coffer init "$COFFER" -q -r "$repo" init || continue
      run coffer backup1 "$COFFER" -q -r "$repo" backup benchdata || continue
      run coffer backup2 "$COFFER" -q -r "$repo" backup benchdata || continue
      run coffer restore "$COFFER" -q -r "$repo" restore latest --target "$BENCH_DIR/restore/coffer" || continue
      ;;
    restic)
      run restic init restic -q -r "$repo" init || continue
      run restic backup1 restic -q -r "$repo" backup benchdata || continue
      run restic backup2 restic -q -r "$repo" backup benchdata || continue
      run restic restore restic -q -r "$repo" restore latest --target "$BENCH_DIR/restore/restic" || continue
      ;;
  esac
  # untimed: the restored tree must equal the dataset (coffer restores the absolute path
  # under the target, restic the relative one)
  got=$BENCH_DIR/restore/$tool/benchdata
  [ -d "$got" ] || got=$BENCH_DIR/restore/$tool$DATA
  if ! diff -r -q --no-dereference "$DATA" "$got" >"$LOGS/$tool-verify.out" 2>&1; then
    FAILED=1
    echo "!! $tool: the restored tree differs from the dataset:"
    head -n 5 "$LOGS/$tool-verify.out" | sed 's/^/   /'
  fi
  rm -rf "$BENCH_DIR/restore/$tool"
done

STORED=$(for tool in "${TOOLS[@]}"; do
  b=$(du -sb "$BENCH_DIR/s3data/$tool-bench" 2>/dev/null | cut -f1)
  echo "$tool ${b:-0}"
done)

python3 - "$RESULTS" "$DATA_BYTES" "$NFILES" "$BENCH_DIR/s3_results.json" "$STORED" \
  "$("$COFFER" version 2>/dev/null | head -n 1)" "$(restic version 2>/dev/null | head -n 1)" <<'EOF'
import json, os, platform, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
data, nfiles, out = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
stored = dict((l.split()[0], int(l.split()[1])) for l in sys.argv[5].splitlines() if l.strip())
res = {}
for tool, step, wall, user, sys_, rss, st in rows:
    res.setdefault(tool, {})[step] = dict(wall=float(wall), cpu=float(user) + float(sys_),
                                         rss_mib=int(rss) / 1024, ok=st == "0")
mib = data / 1048576
print("\ndataset: %.0f MiB in %d files; server: @20minutes/s3rver 4.0.4 on 127.0.0.1; %d CPUs"
      % (mib, nfiles, os.cpu_count()))
print("%-8s %-8s %9s %9s %9s %10s" % ("step", "tool", "wall s", "CPU s", "RSS MiB", "MiB/s"))
names = {"backup1": "first backup", "backup2": "unchanged re-backup", "restore": "full restore"}
for step in ("backup1", "backup2", "restore"):
    for tool in res:
        r = res[tool].get(step)
        if not r:
            print("%-8s %-8s %9s" % (step, tool, "SKIP")); continue
        print("%-8s %-8s %9.2f %9.2f %9.0f %10.1f%s" % (step, tool, r["wall"], r["cpu"],
              r["rss_mib"], mib / r["wall"] if r["wall"] else 0, "" if r["ok"] else "  FAIL"))
ratios = {}
if "coffer" in res and "restic" in res:
    print("\ncoffer's ratios (restic/coffer wall time, >1: coffer faster; RSS coffer/restic):")
    for step in ("backup1", "backup2", "restore"):
        c, r = res["coffer"].get(step), res["restic"].get(step)
        if c and r and c["wall"] and r["rss_mib"]:
            ratios[step] = dict(speedup=r["wall"] / c["wall"], rss=c["rss_mib"] / r["rss_mib"],
                                cpu=c["cpu"] / r["cpu"] if r["cpu"] else None)
            print("  %-20s speed-up %.2fx   CPU coffer/restic %.2f   RSS coffer/restic %.2f"
                  % (names[step], ratios[step]["speedup"], ratios[step]["cpu"] or 0,
                     ratios[step]["rss"]))
for t, b in stored.items():
    print("stored on the server by %s: %.1f MiB" % (t, b / 1048576))
json.dump(dict(dataset_bytes=data, files=nfiles, cpus=os.cpu_count(), kernel=platform.release(),
               coffer=sys.argv[6], restic=sys.argv[7], results=res, ratios=ratios,
               stored_bytes=stored), open(out, "w"), indent=1)
print("results: %s" % out)
EOF
rl_s3rver_stop
exit $FAILED
