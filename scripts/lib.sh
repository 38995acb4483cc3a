# Shared helpers for dormouse's scripts. Sourced, never executed.
# shellcheck shell=bash

DORMOUSE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DORMOUSE_CACHE=${DORMOUSE_CACHE:-$HOME/.cache/dormouse}
DORMOUSE_MIRROR=${DORMOUSE_MIRROR:-http://deb.debian.org/debian}
DORMOUSE_SECURITY_MIRROR=${DORMOUSE_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
DORMOUSE_REPO_PORT=${DORMOUSE_REPO_PORT:-8765}
export DORMOUSE_ROOT DORMOUSE_CACHE DORMOUSE_MIRROR DORMOUSE_SECURITY_MIRROR DORMOUSE_REPO_PORT

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

need_root() {
  [ "$(id -u)" -eq 0 ] || die "$1 must run as root (it uses debootstrap, loop devices, mounts and namespaces)"
}

# Debian packages the scripts and the test suite need on a fresh Debian 12 machine.
HOST_PACKAGES=(
  debootstrap apt-utils gnupg ca-certificates curl
  qemu-system-x86 qemu-utils busybox-static
  zstd xz-utils cpio python3 socat
  e2fsprogs fdisk util-linux mount
  gcc pkg-config libxen-dev libclang-dev fuse3
  gpgv rpm createrepo-c strace minisign
  nftables iproute2 iputils-ping
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
