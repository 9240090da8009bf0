#!/usr/bin/env bash
# Install the real system tools the test suite drives: OpenSSH server and client, `pass`, GnuPG,
# and headless Chromium with a font (the HTML report's browser test). tests/run.sh calls it first.
#
# Idempotent: when everything is present it prints one line. It installs with apt-get when this
# user may (root, or sudo that asks no password). When it may not, or the machine has no apt-get,
# it prints the exact command to run and returns 0, so the tests that need a missing tool skip
# with that reason; with CI=true it returns 1 instead, since CI must run every test.
#
# It starts no service: the tests start their own throw-away sshd (tests/support/sshd.py) and
# gpg-agent (tests/support/passstore.py), so nothing global is left running.
set -euo pipefail

PACKAGES=(openssh-server openssh-client pass gnupg chromium fonts-dejavu-core)
# What the tests run, and the package each comes from (sshd lives in /usr/sbin).
TOOLS=(sshd:openssh-server ssh:openssh-client ssh-keygen:openssh-client pass:pass gpg:gnupg
       gpgconf:gnupg chromium:chromium)

have() { command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" ]]; }

missing_tools() {
    local entry
    for entry in "${TOOLS[@]}"; do
        have "${entry%%:*}" || echo "${entry%%:*} (Debian package ${entry#*:})"
    done
}

# A package counts as installed only when dpkg reports "install ok installed".
is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
    for pkg in "${PACKAGES[@]}"; do
        is_installed "$pkg" || missing+=("$pkg")
    done
fi

if [[ -z "$(missing_tools)" && ${#missing[@]} -eq 0 ]]; then
    echo "install-tools.sh: all present (${PACKAGES[*]}); nothing to do"
    exit 0
fi

cannot_install() {
    {
        echo "install-tools.sh: cannot install the test tools here ($1). Missing:"
        missing_tools | sed 's/^/  - /'
        echo "Install them, then run the tests again:"
        echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${PACKAGES[*]}"
    } >&2
    if [[ "${CI:-}" == "true" ]]; then
        echo "install-tools.sh: CI=true, so a missing tool is a failure, not a skip" >&2
        exit 1
    fi
    echo "install-tools.sh: the tests that need them will be skipped, each saying why" >&2
    exit 0
}

command -v apt-get >/dev/null 2>&1 || cannot_install "no apt-get on this machine"
if [[ "$(id -u)" -eq 0 ]]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    cannot_install "not root, and sudo asks for a password"
fi

echo "install-tools.sh: installing missing packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d exit 101 stops the openssh-server postinst from starting the system sshd (which would
# take port 22 and keep running in containers).
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
# sshd's privilege-separation folder; the tests make it too, but `sshd -t` wants it now.
"${SUDO[@]}" mkdir -p /run/sshd
"${SUDO[@]}" chmod 755 /run/sshd

still=$(missing_tools)
if [[ -n "$still" ]]; then
    echo "install-tools.sh: ERROR: still missing after apt-get install:" >&2
    echo "$still" | sed 's/^/  - /' >&2
    exit 1
fi
echo "install-tools.sh: installed: ${missing[*]}"
