#!/usr/bin/env bash
# setup-debian.sh: install what clipd needs to build, run and test on Debian 12
# (as root, or through sudo). .ci/run installs the same list.
set -euo pipefail
PACKAGES=(build-essential pkg-config openmpi-bin libopenmpi-dev libopenblas-dev
          libyaml-dev libjansson-dev libmicrohttpd-dev libcmocka-dev jq python3-numpy
          curl prometheus libxml2-utils)
as_root=()
if [ "$(id -u)" != 0 ]; then as_root=(sudo); fi
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"
