#!/usr/bin/env bash
# Install what mediaengine needs to run its demo and its tests; safe to run again (it skips what is done).
#
#   1. Debian packages: ffmpeg (ffprobe, for checks), nginx + libnginx-mod-rtmp (local RTMP server),
#      graphviz (`mediaengine graph`), xvfb + libx11-6 (screen-capture tests: a virtual display, painted
#      through libX11), chromium (the preview page opened headless by its test) and python3-tk (the
#      preview window when OpenCV is the headless build), libgl1 + libglib2.0-0 (the OpenCV build that
#      mediapipe pulls in for the beauty extra links them),
#      pulseaudio + pulseaudio-utils + libasound2-plugins + libportaudio2 (sound devices:
#      the audio tests run a private PulseAudio; `microphone`/`audio_out` reach it through PortAudio), espeak-ng
#      (speech for the noise-reduction test).  Installed with apt-get only when one
#      is missing (one `apt-get update`, then install); as non-root it prints the command and fails.
#   2. A virtualenv in .venv (python3 -m venv) with `pip install -e .[dev]`, redone only when
#      pyproject.toml is newer than the stamp file .venv/.bootstrap-stamp.
#
# Environment: PYTHON (default python3) picks the interpreter for the venv; VENV (default .venv).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

APT_PACKAGES=(ffmpeg nginx libnginx-mod-rtmp graphviz xvfb libx11-6 openssl chromium python3-tk libgl1 libglib2.0-0
              pulseaudio pulseaudio-utils libasound2-plugins libportaudio2 espeak-ng)
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
STAMP="$VENV/.bootstrap-stamp"

say() { printf 'bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }

# --- 1. Debian packages -------------------------------------------------------------------------------
missing_packages() {
    local pkg status
    for pkg in "${APT_PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        [[ "$status" == "install ok installed" ]] || printf '%s\n' "$pkg"
    done
}

install_debian_packages() {
    if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
        say "not a Debian/Ubuntu system: make sure these are installed: ${APT_PACKAGES[*]}"
        return 0
    fi
    local missing
    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]} == 0)); then
        say "Debian packages present: ${APT_PACKAGES[*]}"
        return 0
    fi
    local cmd=(apt-get install -y -q "${missing[@]}")
    if [[ $(id -u) -ne 0 ]]; then
        die "missing Debian packages: ${missing[*]}; run as root:
    sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive ${cmd[*]}"
    fi
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # The tests run their own nginx; keep the package from starting a system one on port 80 (which
    # can also fail the install, e.g. without IPv6), as Docker images do with policy-rc.d.
    local policy=/usr/sbin/policy-rc.d added_policy=""
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\n# temporary, from mediaengine scripts/bootstrap.sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        added_policy=1
    fi
    local log ok=1
    log=$(mktemp)
    # Quiet unless it fails; then show apt's output.
    { apt-get update -q && apt-get -o DPkg::Lock::Timeout=120 "${cmd[@]:1}"; } >"$log" 2>&1 || ok=0
    [[ -z $added_policy ]] || rm -f "$policy"
    if ((ok == 0)); then
        cat "$log" >&2
        rm -f "$log"
        die "apt-get failed (command: apt-get update && DEBIAN_FRONTEND=noninteractive ${cmd[*]})"
    fi
    rm -f "$log"
    mapfile -t missing < <(missing_packages)
    ((${#missing[@]} == 0)) || die "still missing after apt-get: ${missing[*]}"
}

# --- 2. Python virtualenv -----------------------------------------------------------------------------
create_venv() {
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found; install Python 3.11+ or set PYTHON=..."
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$("$PYTHON" --version 2>&1) is too old: Python 3.11+ is needed (set PYTHON=python3.11)"
    if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        say "creating virtualenv $VENV with $("$PYTHON" --version 2>&1)"
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV" \
            || die "'$PYTHON -m venv' failed; on Debian's own python3 install python3-venv (apt-get install python3-venv)"
    fi
}

install_python_packages() {
    if [[ -f "$STAMP" && "$STAMP" -nt pyproject.toml ]]; then
        say "Python packages up to date in $VENV (delete $STAMP to reinstall)"
        return 0
    fi
    say "installing mediaengine and its dev tools into $VENV (pip install -e .[dev])"
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_PROGRESS_BAR=off
    # Quiet on success (build-backend chatter included); the whole log when it fails.
    local log
    log=$(mktemp)
    if ! "$VENV/bin/python" -m pip install -q -e '.[dev]' >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "pip install -e '.[dev]' failed (see above)"
    fi
    rm -f "$log"
    touch "$STAMP"
}

install_debian_packages
create_venv
install_python_packages
say "ready: $VENV/bin/mediaengine, $VENV/bin/python"
