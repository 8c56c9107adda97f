#!/usr/bin/env bash
# Debian packages the test suite uses, installed only when missing: a real single-node
# Slurm (slurmctld, slurmd, munge), Chromium for the dashboard test, and what building
# mappy needs (gcc, zlib1g-dev; run this before `pip install`). Needs root.
set -euo pipefail
need=()
command -v sbatch >/dev/null 2>&1 || need+=(slurmctld slurmd slurm-client munge)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# mappy (minimap2's Python binding, a dependency) has no wheel: pip builds it from its sdist
# (~20 s), with a C compiler and zlib's headers
command -v cc >/dev/null 2>&1 || need+=(gcc)
[ -e /usr/include/zlib.h ] || need+=(zlib1g-dev)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "system-deps: root is needed to install ${need[*]}" >&2
  exit 1
fi
echo "system-deps: installing ${need[*]} (about a minute)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
