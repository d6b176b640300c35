#!/usr/bin/env bash
# Installs the Debian packages pipedit builds, tests and runs with. Idempotent: installs only what is
# missing, and runs apt-get update only when something is.
set -euo pipefail
pkgs=(cmake make gcc clang libclang-rt-14-dev pkg-config
      libjansson-dev libopenblas-dev
      libavformat-dev libavcodec-dev libavutil-dev libswscale-dev ffmpeg liburing-dev
      libmicrohttpd-dev python3 python3-numpy curl wrk
      libgrpc-dev libprotobuf-c-dev protobuf-c-compiler python3-grpcio python3-grpc-tools python3-websocket
      libpq-dev postgresql-15 postgresql-client-15)
# python3-torch only checks the torch-cpu noise (tests/ref/test_torch_noise.sh skips without it): it
# pulls in about 100 packages (Qt5, OpenCV, GDAL), 116 MB of archives and 520 MB installed, so it is
# opt-in: PIPEDIT_DEPS_TORCH=1 scripts/deps.sh.
if [ "${PIPEDIT_DEPS_TORCH:-0}" = 1 ]; then pkgs+=(python3-torch); fi
# Wanted but not required: the browser test (tests/integration/test_web_page.sh) skips without Chromium.
# PIPEDIT_NO_BROWSER=1 leaves it out (image builds that run no tests).
optional=(chromium)
[ "${PIPEDIT_NO_BROWSER:-0}" = 1 ] && optional=()
missing=()
for p in "${pkgs[@]}" "${optional[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all $((${#pkgs[@]} + ${#optional[@]})) packages present"
  exit 0
fi
echo "deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
required=()
for p in "${missing[@]}"; do
  [[ " ${optional[*]} " == *" $p "* ]] || required+=("$p")
done
if [ ${#required[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${required[@]}"
fi
for p in "${optional[@]}"; do
  [[ " ${missing[*]} " == *" $p "* ]] || continue
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$p" ||
    echo "deps: $p could not be installed; the tests that need it will skip"
done
