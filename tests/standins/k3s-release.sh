#!/bin/sh
# Lays out STAND-IN k3s releases (tests/standins/k3s) as GitHub serves real ones:
#   DIR/<version>/k3s and DIR/<version>/sha256sum-amd64.txt ("<sha256>  k3s"), one per VERSION.
# Usage: k3s-release.sh DIR VERSION...
set -eu
dir="$1"
shift
here=$(dirname "$0")
for version in "$@"; do
  mkdir -p "$dir/$version"
  sed "s/^VERSION = .*/VERSION = \"$version\"/" "$here/k3s" > "$dir/$version/k3s"
  chmod 755 "$dir/$version/k3s"
  (cd "$dir/$version" && sha256sum k3s > sha256sum-amd64.txt)
done
