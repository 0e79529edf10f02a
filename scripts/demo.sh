#!/usr/bin/env bash
# demo.sh - the main job on a fresh machine: build coffer, create a local repository, back up
# a sample tree, list it, restore it, and verify the restore and the repository.
# Usage: scripts/demo.sh [DIR_TO_BACK_UP]   (default: /usr/share/doc)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/deps.sh
cmake --preset release >/dev/null
cmake --build build/release -j"$(nproc 2>/dev/null || echo 2)"
coffer="$root/build/release/coffer"
src=$(cd "${1:-/usr/share/doc}" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/coffer-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
export COFFER_REPO="$work/repo" COFFER_PASSWORD="demo-password-change-me"

echo "== coffer init ($COFFER_REPO)"
"$coffer" init
echo "== coffer backup $src"
"$coffer" backup "$src"
echo "== coffer backup $src (again: only changes are read)"
"$coffer" backup "$src"
echo "== coffer snapshots"
"$coffer" snapshots
echo "== coffer restore latest --target $work/restore --verify"
"$coffer" restore latest --target "$work/restore" --verify
echo "== compare the restored tree with the source"
diff -r --no-dereference "$src" "$work/restore$src" && echo "restored tree is identical to $src"
echo "== coffer check --read-data"
"$coffer" check --read-data
echo "== coffer stats"
"$coffer" stats
