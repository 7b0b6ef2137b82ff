#!/usr/bin/env bash
# Installs the Debian packages the tests need, when running as root and they are missing.
# Not root: prints what is missing and carries on (tests that need a package skip with a reason).
set -euo pipefail
pkgs=(chromium mosquitto espeak-ng libespeak-ng1 libportaudio2 sox flite)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "sysdeps: not root; missing Debian packages: ${missing[*]} (install them with apt-get)" >&2
  exit 0
fi
echo "sysdeps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
