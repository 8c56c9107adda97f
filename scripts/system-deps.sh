#!/usr/bin/env bash
# Debian packages the test suite uses, installed only when missing: a real single-node
# Slurm (slurmctld, slurmd, munge) and Chromium for the dashboard test. Needs root.
set -euo pipefail
need=()
command -v sbatch >/dev/null 2>&1 || need+=(slurmctld slurmd slurm-client munge)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "system-deps: root is needed to install ${need[*]}" >&2
  exit 1
fi
echo "system-deps: installing ${need[*]} (about a minute)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
