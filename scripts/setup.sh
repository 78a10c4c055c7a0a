#!/usr/bin/env bash
# Set up a fresh Debian 12 machine for qemu-conformance. Idempotent: a second run takes seconds.
#   - apt: the host's QEMU 7.2 (x86_64 + aarch64), qemu-img, libvirt's domain schema (libvirt0)
#   - apt: openssh-server/-client and iproute2, for the avocado remote-spawner test (two test hosts in
#     network namespaces, each with its own sshd: no system sshd is configured or started)
#   - apt: chromium, for the HTML report's browser test (Playwright drives it; no browser is downloaded)
#   - pip: this package with its test and avocado extras (editable: capsdata/ and templates/ are read in place)
#   - the extra real QEMU builds 10.0 (bookworm-backports) and 5.2 (bullseye), unpacked beside 7.2
#     under $QEMU_CONFORMANCE_BUILDS (default ~/.cache/qemu-conformance/builds), nothing installed
#   - the test guests (Debian cloud kernel + busybox initramfs; x86_64 also the generic kernel's, for the
#     device-rich cases), cached under ~/.cache/qemu-conformance
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

APT_PACKAGES=(qemu-system-x86 qemu-system-arm qemu-utils libvirt0 procps openssh-server openssh-client iproute2
              chromium)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: apt-get install ${missing[*]}"
  $SUDO apt-get update -q
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    # only sshd's binary is wanted: no system sshd is started by this install (the tests start their own)
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

echo "setup: pip install -e .[test,avocado]"
python3 -m pip install -q --disable-pip-version-check -e '.[test,avocado]'

echo "setup: extra QEMU builds (10.0, 5.2)"
qemu-conformance builds fetch || echo "setup: WARNING: extra QEMU builds unavailable; cross-version tests will skip"
qemu-conformance builds cpu-map || echo "setup: WARNING: libvirt 11.3's CPU map unavailable; host-model CPUs fall back to /usr/share/libvirt/cpu_map"

if qemu-conformance guest --help >/dev/null 2>&1; then
  echo "setup: test guests"
  qemu-conformance guest build --arch x86_64 --flavour cloud --flavour generic
  qemu-conformance guest build --arch aarch64
fi
echo "setup: done"
