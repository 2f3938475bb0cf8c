#!/usr/bin/env bash
# Installs what is missing for the local stack and the test suite, and nothing else.
# Idempotent: a second run finds everything in place and returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(podman buildah runc skopeo docker-registry busybox-static git containernetworking-plugins chromium)
# Each one's reason: podman+runc run the app containers (localnomad's podman runtime);
# buildah builds images daemonless; skopeo reads image digests from the registry;
# docker-registry is the local OCI registry; busybox-static seeds an offline base image;
# git fetches sources; containernetworking-plugins gives podman its bridge network.
# chromium is the headless browser the web UI test drives through Playwright.

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install: apt packages missing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's docker-registry package starts a system registry on :5000 where systemd runs;
# the devstack runs its own registry, so the system one must not hold the port.
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled docker-registry >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "install: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.shaman-installed
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "install: installing the project into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  echo "$want" > "$stamp"
fi
