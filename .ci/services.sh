#!/usr/bin/env bash
# Install the real system tools the test-suite drives (OpenSSH server/client,
# `pass`, GnuPG, and headless Chromium with a font for the HTML report's
# browser test).  Idempotent: when everything is already present it only
# prints one line and exits, so CI can call it unconditionally.
#
# It deliberately does NOT start any service: tests start their own throw-away
# sshd per session (tests/support/sshd.py) and their own gpg-agent
# (tests/support/passstore.py), so nothing global is left running.
set -euo pipefail

PACKAGES=(openssh-server openssh-client pass gnupg chromium fonts-dejavu-core)

if [[ "$(id -u)" -ne 0 ]]; then
    SUDO=(sudo)
else
    SUDO=()
fi

# A package counts as installed only when dpkg reports "install ok installed";
# half-configured or removed-but-config-left packages get (re)installed.
is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! is_installed "$pkg"; then
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "services.sh: all present (${PACKAGES[*]}); nothing to do"
    exit 0
fi

echo "services.sh: installing missing packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d exit 101 stops the openssh-server postinst from starting the
# system sshd (which would grab port 22 and keep running in containers).
policy_rc=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e "$policy_rc" ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy_rc" >/dev/null
    "${SUDO[@]}" chmod 755 "$policy_rc"
    created_policy=1
fi
cleanup() {
    if [[ $created_policy -eq 1 ]]; then
        "${SUDO[@]}" rm -f "$policy_rc"
    fi
}
trap cleanup EXIT

"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "services.sh: installed: ${missing[*]}"

# sshd's privilege-separation directory; tests also create it, but having it
# here makes `sshd -t` usable right after install.
"${SUDO[@]}" mkdir -p /run/sshd
"${SUDO[@]}" chmod 755 /run/sshd

for bin in sshd ssh ssh-keygen pass gpg gpgconf chromium; do
    if ! command -v "$bin" >/dev/null 2>&1 && [[ ! -x "/usr/sbin/$bin" ]]; then
        echo "services.sh: ERROR: $bin still missing after install" >&2
        exit 1
    fi
done
echo "services.sh: done"
