# Shared helpers for dormouse's scripts. Sourced, never executed.
# shellcheck shell=bash

DORMOUSE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DORMOUSE_CACHE=${DORMOUSE_CACHE:-$HOME/.cache/dormouse}
DORMOUSE_MIRROR=${DORMOUSE_MIRROR:-http://deb.debian.org/debian}
DORMOUSE_SECURITY_MIRROR=${DORMOUSE_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The test bed's mirror listens on a port of its own cache, so that two caches (two clones, a
# CI run beside a developer's) never meet on one port. The guest images name the port in their
# apt sources, so once a test bed is built, the port it recorded is the one.
testbed_repo_port() {
  local recorded=$DORMOUSE_CACHE/guest/repo-port
  if [ -s "$recorded" ]; then
    cat "$recorded"
  elif [ -n "${DORMOUSE_REPO_PORT:-}" ]; then
    echo "$DORMOUSE_REPO_PORT"
  else
    # 20000-29999, from the cache's path.
    echo $((20000 + $(realpath -m "$DORMOUSE_CACHE" | cksum | cut -d' ' -f1) % 10000))
  fi
}
_port=$(testbed_repo_port)
if [ -n "${DORMOUSE_REPO_PORT:-}" ] && [ "$DORMOUSE_REPO_PORT" != "$_port" ]; then
  say "DORMOUSE_REPO_PORT=$DORMOUSE_REPO_PORT ignored: the test bed in $DORMOUSE_CACHE was built for port $_port"
fi
DORMOUSE_REPO_PORT=$_port
unset _port
export DORMOUSE_ROOT DORMOUSE_CACHE DORMOUSE_MIRROR DORMOUSE_SECURITY_MIRROR DORMOUSE_REPO_PORT

need_root() {
  [ "$(id -u)" -eq 0 ] || die "$1 must run as root (it uses debootstrap, loop devices, mounts and namespaces)"
}

# Debian packages the scripts and the test suite need on a fresh Debian 12 machine.
HOST_PACKAGES=(
  debootstrap apt-utils gnupg ca-certificates curl
  qemu-system-x86 qemu-utils busybox-static
  zstd xz-utils cpio python3 python3-venv socat
  e2fsprogs fdisk util-linux mount
  gcc pkg-config libxen-dev libclang-dev fuse3
  gpgv rpm createrepo-c strace minisign
  nftables iproute2 iputils-ping xfsprogs
  fonts-dejavu-core
)

missing_host_packages() {
  local p
  for p in "${HOST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || printf '%s\n' "$p"
  done
}

install_host_packages() {
  local missing pass
  # Two passes: installing one package can remove another that conflicts with it (a backported
  # qemu-utils goes when Debian's qemu-system-common comes in); the second pass brings back
  # Debian's version of what went.
  for pass in 1 2; do
    mapfile -t missing < <(missing_host_packages)
    [ "${#missing[@]}" -eq 0 ] && return 0
    say "installing Debian packages: ${missing[*]}"
    [ "$pass" = 1 ] && apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  done
  mapfile -t missing < <(missing_host_packages)
  [ "${#missing[@]}" -eq 0 ] || die "Debian packages still not installed after two attempts: ${missing[*]} (apt-get install them by hand to see why)"
}

# Rust: the machine's rustup toolchain when present; otherwise rustup from its official installer.
ensure_rust() {
  if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    say "installing the Rust toolchain with rustup (Debian 12's rustc is too old for edition 2024)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt \
      || die "could not install Rust: install rustup by hand (https://rustup.rs) and rerun"
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  fi
}

# Seconds since the epoch with sub-second precision, for step timings.
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

# Where cargo puts what it builds: CARGO_TARGET_DIR, a target-dir from cargo's configuration,
# or target/ in the workspace. cargo itself says.
cargo_target_dir() {
  cargo metadata --format-version 1 --no-deps --manifest-path "$DORMOUSE_ROOT/Cargo.toml" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}

# Runs at exit: stops the test bed's mirror unless it was already serving when the calling
# script started (what a command starts, it stops).
stop_repo_at_exit() {
  if ! "$DORMOUSE_ROOT/scripts/repo-serve" status >/dev/null 2>&1; then
    trap '"$DORMOUSE_ROOT/scripts/repo-serve" stop >/dev/null 2>&1 || true' EXIT
  fi
}

# Runs a command chrooted into $1 with /proc, /sys and /dev/pts mounted in a private mount
# namespace, so nothing stays mounted if the command fails or is interrupted.
in_chroot() {
  local root=$1
  shift
  unshare --mount --propagation private -- sh -ec '
    root=$1; shift
    mount -t proc proc "$root/proc"
    mount -t sysfs sys "$root/sys"
    mount -t devpts -o newinstance devpts "$root/dev/pts"
    exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
  ' in_chroot "$root" "$@"
}

# new_apt_repo DIR: an empty signed mirror in DIR (www/, its pools, gnupg/ with a fresh key;
# the public key is www/dormouse-testbed.gpg).
new_apt_repo() {
  mkdir -p "$1/gnupg" "$1/www/debian/pool/main" "$1/www/debian-security/pool/main"
  chmod 700 "$1/gnupg"
  gpg --homedir "$1/gnupg" --batch --passphrase '' \
    --quick-gen-key 'dormouse test bed archive <testbed@dormouse.invalid>' ed25519 sign never 2>/dev/null
  gpg --homedir "$1/gnupg" --batch --export >"$1/www/dormouse-testbed.gpg"
}

# publish_apt_repo DIR SUITE STATE: indices of DIR/www (made by new_apt_repo) as two signed
# suites laid out like Debian's mirrors, debian (SUITE) and debian-security (SUITE-security).
# STATE "stale" leaves SUITE-security empty: the state a guest's apt lists are taken from, so
# that an `apt-get update` in the guest is a real refresh that discovers the update.
publish_apt_repo() {
  local repo=$1 SUITE=$2 state=$3 www=$1/www
  rm -rf "$www/debian/dists" "$www/debian-security/dists"
  local archive suite label pool
  for archive in debian debian-security; do
    if [ "$archive" = debian ]; then suite=$SUITE label=Debian; else suite=$SUITE-security label=Debian-Security; fi
    local dist=$www/$archive/dists/$suite
    mkdir -p "$dist/main/binary-amd64"
    pool=pool/main
    if [ "$archive" = debian-security ] && [ "$state" = stale ]; then
      : >"$dist/main/binary-amd64/Packages"
    else
      (cd "$www/$archive" && apt-ftparchive packages "$pool") >"$dist/main/binary-amd64/Packages"
    fi
    xz -k -9 "$dist/main/binary-amd64/Packages"
    gzip -k -9 -n "$dist/main/binary-amd64/Packages"
    apt-ftparchive \
      -o APT::FTPArchive::Release::Origin="$label" \
      -o APT::FTPArchive::Release::Label="$label" \
      -o APT::FTPArchive::Release::Suite="$suite" \
      -o APT::FTPArchive::Release::Codename="$suite" \
      -o APT::FTPArchive::Release::Architectures=amd64 \
      -o APT::FTPArchive::Release::Components=main \
      -o APT::FTPArchive::Release::Description="dormouse test bed ($state)" \
      release "$dist" >"$dist/Release.tmp"
    mv "$dist/Release.tmp" "$dist/Release"
    gpg --homedir "$repo/gnupg" --batch --yes --clearsign -o "$dist/InRelease" "$dist/Release"
    gpg --homedir "$repo/gnupg" --batch --yes --detach-sign --armor -o "$dist/Release.gpg" "$dist/Release"
  done
}

# What a later step was built from: the earlier step's recipe and when it was built, so that a
# rebuilt guest (a new archive day) rebuilds everything made from it.
built() { echo "$(cat "$DORMOUSE_CACHE/$1/DONE")@$(cat "$DORMOUSE_CACHE/$1/BUILT" 2>/dev/null)"; }

# done_with STEP DONE_FILE RECIPE: true when the step's output was built from RECIPE; otherwise
# says in one line why the step is built (again).
done_with() {
  [ -f "$2" ] && [ "$(cat "$2")" = "$3" ] && return 0
  if [ -f "$2" ]; then
    say "$1: rebuilding: built from '$(cat "$2")', the recipe is now '$3'"
  else
    say "$1: building (nothing built yet in $(dirname "$2"))"
  fi
  return 1
}
