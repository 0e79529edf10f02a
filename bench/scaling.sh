#!/usr/bin/env bash
# scaling.sh - does backup time grow linearly with the data? Runs bench/compare.sh at 1x, 2x
# and 4x a base dataset size (each size in its own work directory) and prints, per tool, the
# first backup's wall and CPU time, MiB/s, and the time per GiB relative to the 1x run
# (1.00 = perfectly linear; above 1 = slower per byte at the larger size).
#
# Usage: bash bench/scaling.sh
# Environment:
#   BENCH_SCALING_BASE_MB  base size in MiB (default 1024)
#   BENCH_SCALING_FACTORS  multiples of the base (default "1 2 4")
#   BENCH_SCALING_TOOLS    tools (default "coffer restic"; borg is slow at 4x)
#   BENCH_SCALING_DIR      parent work directory (default bench/work-scaling)
#   COFFER_BIN             as for compare.sh
# Disk: about 3.5x the largest size (dataset, repositories, restores).
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BASE=${BENCH_SCALING_BASE_MB:-1024}
FACTORS=${BENCH_SCALING_FACTORS:-"1 2 4"}
TOOLS=${BENCH_SCALING_TOOLS:-"coffer restic"}
PARENT=${BENCH_SCALING_DIR:-"$SCRIPT_DIR/work-scaling"}

case "$BASE" in ''|*[!0-9]*) echo "scaling.sh: BENCH_SCALING_BASE_MB must be a number" >&2; exit 2 ;; esac
mkdir -p "$PARENT"
for f in $FACTORS; do
  case "$f" in ''|*[!0-9]*) echo "scaling.sh: factor '$f' is not a whole number" >&2; exit 2 ;; esac
  dir="$PARENT/x$f"
  echo "== ${f}x: $((BASE * f)) MiB in $dir"
  # every step runs (restore and check too: compare.sh verifies the restore), so a scaling
  # run is also a correctness run at that size
  BENCH_TOOLS="$TOOLS" BENCH_SIZE_MB=$((BASE * f)) BENCH_DIR="$dir" \
    bash "$SCRIPT_DIR/compare.sh" >"$PARENT/x$f.log" 2>&1 ||
    { echo "scaling.sh: compare.sh failed at ${f}x (see $PARENT/x$f.log)" >&2; exit 1; }
  # the dataset and restores are large: keep only the results
  rm -rf "$dir/data" "$dir/restore" "$dir/repos" "$dir/cache"
done

python3 - "$PARENT" "$FACTORS" "$TOOLS" <<'EOF'
import json, sys
parent, factors, tools = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
rows = {}
for f in factors:
    d = json.load(open(f"{parent}/x{f}/results.json"))
    rows[f] = d
print()
print("First full backup by dataset size (warm cache; per-GiB time relative to the 1x run):")
print(f"{'tool':8} {'size':>6} {'MiB':>8} {'wall s':>8} {'CPU s':>8} {'MiB/s':>8} {'s/GiB':>7} {'vs 1x':>6} {'RSS MiB':>8}")
base = {}
for t in tools:
    for f in factors:
        d = rows[f]
        r = d["results"].get(t, {}).get("backup_initial")
        if not r or r.get("status") != "ok":
            print(f"{t:8} {f+'x':>6}  (failed or missing)")
            continue
        mib = d["dataset"]["bytes"] / 1048576
        spg = r["wall_s"] / (mib / 1024)
        base.setdefault(t, spg)
        print(f"{t:8} {f+'x':>6} {mib:8.0f} {r['wall_s']:8.2f} {r['cpu_s']:8.2f} "
              f"{mib / r['wall_s']:8.1f} {spg:7.2f} {spg / base[t]:6.2f} {r['max_rss_kib'] / 1024:8.1f}")
if "coffer" in tools and "restic" in tools:
    print()
    print("coffer vs restic, first backup (restic wall / coffer wall):")
    for f in factors:
        res = rows[f]["results"]
        try:
            print(f"  {f}x: {res['restic']['backup_initial']['wall_s'] / res['coffer']['backup_initial']['wall_s']:.2f}x")
        except (KeyError, ZeroDivisionError):
            print(f"  {f}x: n/a")
EOF
