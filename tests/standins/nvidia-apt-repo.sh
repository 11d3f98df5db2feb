#!/bin/sh
# STAND-IN for NVIDIA's apt repositories: the CUDA repository (driver, Fabric Manager) and the
# libnvidia-container repository (container toolkit). Neither is reachable here.
#
# Usage: nvidia-apt-repo.sh DIR "PACKAGE..." VERSION...
# Builds a flat apt repository ("deb file://DIR /") signed with a key made on the spot, holding
# each PACKAGE at each VERSION (as VERSION-1), under NVIDIA's package names. DIR/3bf863cc.pub is
# the public key and DIR/FINGERPRINT its fingerprint, so fingerprint checks run for real.
#
# Models: package names and versions (several releases, for upgrades), a signed flat repository,
# the systemd units of nvidia-persistenced and nvidia-fabricmanager, and the binaries k3s looks
# for to detect the NVIDIA runtime (nvidia-container-runtime, nvidia-container-runtime.cdi), and
# the runtime's config.toml as the real package's postinst leaves it (nvidia-ctk's defaults, the
# keys at their default commented out: internal/config/toml_test.go in nvidia-container-toolkit).
# Does not model: any NVIDIA code (packages hold marker files; daemons only sleep, binaries only
# fail), DKMS builds, the dependencies between NVIDIA's packages, or NVIDIA's real keys.
set -eu
repo="$1"
packages="$2"
shift 2
export GNUPGHOME="/root/.standin-gnupg-$(basename "$repo")"
mkdir -p "$repo" "$GNUPGHOME"
chmod 700 "$GNUPGHOME"

unit() {  # description
  printf '[Unit]\nDescription=STAND-IN %s\n\n[Service]\nExecStart=/bin/sleep infinity\n\n[Install]\nWantedBy=multi-user.target\n' "$1"
}

work=$(mktemp -d)
for version in "$@"; do
  for package in $packages; do
    root="$work/$package-$version"
    mkdir -p "$root/DEBIAN" "$root/usr/share/doc/$package"
    printf 'Package: %s\nVersion: %s-1\nArchitecture: all\nMaintainer: toolkit tests <tests@toolkit.invalid>\nDescription: STAND-IN for NVIDIA %s %s\n' \
      "$package" "$version" "$package" "$version" > "$root/DEBIAN/control"
    echo "stand-in $package $version" > "$root/usr/share/doc/$package/STANDIN"
    case "$package" in
      nvidia-persistenced|nvidia-fabricmanager)
        mkdir -p "$root/lib/systemd/system"
        unit "NVIDIA $package $version" > "$root/lib/systemd/system/$package.service" ;;
      nvidia-container-toolkit-base)
        mkdir -p "$root/usr/bin"
        for binary in nvidia-container-runtime nvidia-container-runtime.cdi nvidia-ctk; do
          printf '#!/bin/sh\necho "STAND-IN %s %s" >&2\nexit 1\n' "$binary" "$version" > "$root/usr/bin/$binary"
          chmod 755 "$root/usr/bin/$binary"
        done
        mkdir -p "$root/etc/nvidia-container-runtime"
        printf '%s\n' '#accept-nvidia-visible-devices-as-volume-mounts = false' \
          '#accept-nvidia-visible-devices-envvar-when-unprivileged = true' 'disable-require = false' \
          'supported-driver-capabilities = "compat32,compute,display,graphics,ngx,utility,video"' '' \
          '[nvidia-container-cli]' 'environment = []' 'ldconfig = "@/sbin/ldconfig"' 'load-kmods = true' '' \
          '[nvidia-container-runtime]' 'log-level = "info"' 'mode = "auto"' \
          'runtimes = ["docker-runc", "runc", "crun"]' > "$root/etc/nvidia-container-runtime/config.toml" ;;
    esac
    dpkg-deb --root-owner-group --build "$root" "$repo/${package}_${version}-1_all.deb" >/dev/null
  done
done
rm -rf "$work"

gpg --batch --passphrase '' --quick-gen-key "toolkit stand-in $(basename "$repo") <standin@toolkit.invalid>" ed25519 sign never
cd "$repo"
apt-ftparchive packages . > Packages
apt-ftparchive release . > Release
gpg --batch --yes --clearsign --output InRelease Release
gpg --armor --export > 3bf863cc.pub
gpg --with-colons --list-keys | awk -F: '/^fpr/ { print $10; exit }' > FINGERPRINT
