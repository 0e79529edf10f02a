#!/usr/bin/env bash
# deps.sh - install everything coffer needs to build and test on Debian 12. Idempotent:
# packages already present are not reinstalled. Run as root (or with sudo available).
# Usage: scripts/deps.sh [--bench]   (--bench also installs restic and BorgBackup)
set -euo pipefail
pkgs=(build-essential cmake pkg-config libssl-dev libzstd-dev libjansson-dev libcmocka-dev
      libcurl4-openssl-dev libssh2-1-dev libsqlite3-dev sqlite3 attr acl time python3
      openssh-server openssh-client postgresql postgresql-client gdb)
# node and npm run the S3 and Azure test servers; the machine image usually has them
command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || pkgs+=(npm)
if [ "${1:-}" = "--bench" ]; then
  pkgs+=(restic borgbackup)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get -o DPkg::Lock::Timeout=120 update -qq </dev/null
  $SUDO apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends "${missing[@]}" </dev/null
fi
