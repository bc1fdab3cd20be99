#!/usr/bin/env bash
# setup-debian.sh: install what clipd needs to build, run and test on Debian 12
# (as root, or through sudo): the packages listed in deploy/packages.txt,
# the same list .ci/run installs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mapfile -t PACKAGES <"$here/packages.txt"
as_root=()
if [ "$(id -u)" != 0 ]; then as_root=(sudo); fi
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"
