#!/usr/bin/env bash
# Base images from a Debian mirror, for sites where no image registry can be reached (debootstrap → docker import).
#
#   docker/base/build.sh python        # → python:3.11-slim, the name Dockerfile.cpu/.gpu/.train start FROM
#   docker/base/build.sh prometheus    # → prd-inspect/prometheus:debian (needs the python base; Debian's package)
#
# The python base is Debian bookworm (minbase) + python3.11 + a venv at /opt/venv first on PATH, so `python` and
# `pip` work as in the registry's python:3.11-slim. The host's CA certificates go into it and pip is told to use
# them (PIP_CERT), with the host's index when one is configured (PIP_INDEX_URL / pip config global.index-url), so
# pip inside a build trusts and asks what the host's pip trusts and asks. Run as root (debootstrap, chroot).
#
# Environment: DEBIAN_MIRROR (default: the host's apt mirror, else http://deb.debian.org/debian), DEBIAN_SUITE
# (bookworm), HOST_CA_BUNDLE (/etc/ssl/certs/ca-certificates.crt), BASE_IMAGE (python:3.11-slim),
# PROMETHEUS_IMAGE (prd-inspect/prometheus:debian), DOCKER (docker).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SUITE="${DEBIAN_SUITE:-bookworm}"
HOST_CA_BUNDLE="${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
BASE_IMAGE="${BASE_IMAGE:-python:3.11-slim}"
PROMETHEUS_IMAGE="${PROMETHEUS_IMAGE:-prd-inspect/prometheus:debian}"
DOCKER="${DOCKER:-docker}"

host_mirror() {
    local uri
    uri=$(grep -h -m1 -E '^URIs: .*/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}') || true
    [[ -n "$uri" ]] || uri=$(grep -h -m1 -E '^deb .*/debian/? ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}') || true
    echo "${uri:-http://deb.debian.org/debian}"
}

host_index_url() {
    [[ -n "${PIP_INDEX_URL:-}" ]] && { echo "$PIP_INDEX_URL"; return; }
    python3 -m pip config get global.index-url 2>/dev/null || true
}

python_base() {
    command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }
    [[ -s "$HOST_CA_BUNDLE" ]] || { echo "no CA bundle at $HOST_CA_BUNDLE" >&2; exit 1; }
    local mirror index
    mirror="${DEBIAN_MIRROR:-$(host_mirror)}"
    root=$(mktemp -d /tmp/prd-base.XXXXXX)  # global: the EXIT trap removes it
    trap 'rm -rf "$root"' EXIT
    echo "debootstrap $SUITE from $mirror into $root"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" "$root" "$mirror" >/dev/null
    # The host's trust: its CA bundle joins the image's store, which pip, requests and curl then use.
    cp "$HOST_CA_BUNDLE" "$root/usr/local/share/ca-certificates/prd-host-ca-bundle.crt"
    chroot "$root" update-ca-certificates >/dev/null 2>&1
    # The venv holds no pip: `pip` runs Debian's pip wheel in place (pip supports that), which keeps ~20 MB of pip
    # and setuptools out of every image built on this base while `pip install` works as in python:3.11-slim.
    chroot "$root" python3 -m venv --without-pip /opt/venv
    printf '#!/bin/sh\nexec /opt/venv/bin/python "$(ls /usr/share/python-wheels/pip-*.whl | tail -n 1)/pip" "$@"\n' \
        >"$root/opt/venv/bin/pip" && chmod 755 "$root/opt/venv/bin/pip"
    index=$(host_index_url)
    {
        echo "[global]"
        echo "cert = /etc/ssl/certs/ca-certificates.crt"
        [[ -n "$index" ]] && echo "index-url = $index"
    } >"$root/etc/pip.conf"
    # As Debian's own images: no service starts while a package installs; no apt caches, docs or locales.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod 755 "$root/usr/sbin/policy-rc.d"
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
    rm -rf "$root/usr/lib/x86_64-linux-gnu/gconv"  # glibc's iconv charsets: Python brings its own codecs
    tar -C "$root" --numeric-owner -c . | "$DOCKER" import \
        --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
        --change 'CMD ["python3"]' \
        --message "debootstrap $SUITE minbase + python3 venv, host CA certificates (docker/base/build.sh)" \
        - "$BASE_IMAGE"
    "$DOCKER" run --rm "$BASE_IMAGE" python -c 'import ssl, sys; print(sys.version.split()[0], ssl.OPENSSL_VERSION)'
}

prometheus_image() {
    "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1 || python_base
    "$DOCKER" build -q -f docker/base/Dockerfile.prometheus --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        -t "$PROMETHEUS_IMAGE" docker/base
    "$DOCKER" run --rm --entrypoint prometheus "$PROMETHEUS_IMAGE" --version 2>&1 | head -n 1
}

case "${1:-}" in
    python) python_base ;;
    prometheus) prometheus_image ;;
    *) echo "usage: $0 python|prometheus" >&2; exit 2 ;;
esac
