#!/usr/bin/env bash
# Build a local stand-in for the official `python:3.11-slim` image from Debian bookworm, so that an
# unmodified `FROM python:3.11-slim` Dockerfile builds on machines that cannot reach Docker Hub.
#
#   deploy/docker-local/dockerd.sh start
#   deploy/docker-local/build_base_image.sh [--force] [--tag python:3.11-slim]
#
# What it makes: debootstrap --variant=minbase bookworm + python3 (3.11), python3-pip, python3-venv;
# `python`/`pip` on PATH; the host's CA bundle; a /etc/pip.conf that reaches the package index the
# way the host's pip does; pip allowed to install system-wide (as in the official image);
# ENV PATH / LANG=C.UTF-8 / PYTHON_VERSION and CMD ["python3"] as in the official image.
# Differences from the official image: Python is Debian's (/usr/bin/python3, packages installed by
# pip go to /usr/local/lib/python3.11/dist-packages), not a source build under /usr/local.
#
# Environment knobs (all optional):
#   DEBIAN_MIRROR / DEBIAN_SECURITY_MIRROR  override the mirrors read from /etc/apt/sources*
#   PROJECT_DOCKERD_ROOT                    debs are cached in $PROJECT_DOCKERD_ROOT/debootstrap-cache
#   PROJECT_DOCKERD_SOCK                    engine socket (default: $DOCKER_HOST or /var/run/docker.sock)
set -euo pipefail

TAG=python:3.11-slim
SUITE=bookworm
FORCE=0
while (($#)); do
    case $1 in
        --force) FORCE=1 ;;
        --tag) TAG=$2; shift ;;
        -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (use --force, --tag NAME)" >&2; exit 2 ;;
    esac
    shift
done

STATE_ROOT=${PROJECT_DOCKERD_ROOT:-/tmp/project-dockerd}
CACHE_DIR=$STATE_ROOT/debootstrap-cache
HOST_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
if [[ -n ${PROJECT_DOCKERD_SOCK:-} ]]; then export DOCKER_HOST=unix://$PROJECT_DOCKERD_SOCK; fi

log() { printf '[build_base_image] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
step_start() { STEP_T0=$SECONDS; log "==> $*"; }
step_done() { log "    done in $((SECONDS - STEP_T0)) s"; TIMINGS+=("$1: $((SECONDS - STEP_T0)) s"); }
TIMINGS=()

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap needs it)"
docker info >/dev/null 2>&1 || die "no Docker engine answers; run deploy/docker-local/dockerd.sh start first"

OLD_ID=$(docker image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)
if [[ -n $OLD_ID ]] && ((FORCE == 0)); then
    log "image $TAG already exists (${OLD_ID:0:19}); use --force to rebuild"
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# Mirrors: use the same Debian mirror apt uses on this host (the only one reachable in a sandbox).
# Reads deb822 *.sources and one-line *.list files; prints the first URI whose suites include $1.
apt_mirror_for_suite() {
    local want=$1 f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        # deb822: paragraphs separated by blank lines; Types/URIs/Suites fields.
        awk -v want="$want" '
            function flush() { if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " want " ") && uri != "" && !done) { print uri; done=1 } types=""; suites=""; uri="" }
            /^[[:space:]]*$/ { flush(); next }
            /^[[:space:]]*#/ { next }
            /^Types:/  { sub(/^Types:[[:space:]]*/, "");  types=$0 }
            /^URIs:/   { sub(/^URIs:[[:space:]]*/, "");   split($0, u, /[[:space:]]+/); uri=u[1] }
            /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites=$0 }
            END { flush() }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $f ]] || continue
        # one-line: deb [opts] URI SUITE COMPONENTS...
        awk -v want="$want" '$1 == "deb" { i=2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i+1) == want) print $i }' "$f"
    done
}
MIRROR=${DEBIAN_MIRROR:-$(apt_mirror_for_suite "$SUITE" | head -n1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-$(apt_mirror_for_suite "$SUITE-security" | head -n1)}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
log "Debian mirror: $MIRROR (security: $SECURITY_MIRROR)"

# If the host's apt goes through a proxy, debootstrap (wget) must too.
APT_PROXY=$(apt-config dump 2>/dev/null | awk -F'"' '/^Acquire::http::Proxy /{print $2; exit}')
if [[ -n $APT_PROXY && $APT_PROXY != DIRECT ]]; then
    export http_proxy=$APT_PROXY
    log "using apt's HTTP proxy for debootstrap: $APT_PROXY"
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends debootstrap debian-archive-keyring
fi

# ---------------------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/project-base-image.XXXXXX)
ROOTFS=$WORK/rootfs
cleanup() {
    # debootstrap mounts proc/sys inside the rootfs; never rm -rf through a live mount.
    local m
    if [[ -d $ROOTFS ]]; then
        awk -v r="$ROOTFS" '$2 == r || index($2, r "/") == 1 {print $2}' /proc/mounts | sort -r |
            while read -r m; do umount -l "$m" 2>/dev/null || true; done
    fi
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

ARCH=$(dpkg --print-architecture)
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
keyring_arg=()
[[ -r $KEYRING ]] && keyring_arg=(--keyring="$KEYRING")
mkdir -p "$CACHE_DIR"

step_start "debootstrap $SUITE ($ARCH, minbase + python3) into $ROOTFS"
# minbase = essential + apt only. debootstrap follows Depends, not Recommends, which keeps out
# python3-pip's build-essential/python3-dev recommends (like the official slim image, no compiler).
debootstrap --variant=minbase --arch="$ARCH" "${keyring_arg[@]}" \
    --cache-dir="$CACHE_DIR" \
    --include=ca-certificates,python3,python3-pip,python3-venv \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -n 40 "$WORK/debootstrap.log" >&2; tail -n 40 "$ROOTFS/debootstrap/debootstrap.log" >&2 2>/dev/null || true; die "debootstrap failed"; }
step_done debootstrap

step_start "configuring the rootfs"
# apt inside the image: same mirror as the host, plus updates and security.
rm -f "$ROOTFS/etc/apt/sources.list"
cat >"$ROOTFS/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF

# Same small-image apt/dpkg settings as Debian's official docker images.
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
echo 'Acquire::Languages "none";' >"$ROOTFS/etc/apt/apt.conf.d/docker-no-languages"
echo 'Acquire::GzipIndexes "true";' >"$ROOTFS/etc/apt/apt.conf.d/docker-gzip-indexes"
echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$ROOTFS/etc/apt/apt.conf.d/docker-autoremove-suggests"
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
# keep later apt-get installs small: no docs, man pages, translations
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
# ...and drop what debootstrap already installed of those.
find "$ROOTFS/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete
find "$ROOTFS/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
rm -rf "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/lintian/*

# `python` and `pip` like the official image (/usr/local/bin comes first on PATH).
ln -sf /usr/bin/python3 "$ROOTFS/usr/local/bin/python"
[[ -e $ROOTFS/usr/bin/pip ]] || ln -sf /usr/bin/pip3 "$ROOTFS/usr/local/bin/pip"
PYVER=$(chroot "$ROOTFS" /usr/bin/python3 -c 'import platform; print(platform.python_version())')
PYMM=${PYVER%.*}
[[ $PYMM == 3.11 ]] || log "WARNING: Debian $SUITE python3 is $PYVER, not 3.11"

# PEP 668: Debian marks its python "externally managed" and pip refuses system installs; the
# official image has no such marker. A dpkg diversion (not a plain rm) keeps the marker away
# even when apt upgrades libpython3.11-stdlib later.
if [[ -e $ROOTFS/usr/lib/python$PYMM/EXTERNALLY-MANAGED ]]; then
    chroot "$ROOTFS" dpkg-divert --local --rename \
        --divert "/usr/lib/python$PYMM/EXTERNALLY-MANAGED.disabled" \
        --add "/usr/lib/python$PYMM/EXTERNALLY-MANAGED" >/dev/null
fi

# CA bundle: the host's, verbatim (in this sandbox it includes the egress proxy's CA, without which
# TLS to the package index fails). The host-only certificates also go to
# /usr/local/share/ca-certificates so a later update-ca-certificates (apt trigger) keeps them.
if [[ -r $HOST_CA_BUNDLE ]]; then
    if command -v python3 >/dev/null 2>&1; then
        python3 - "$HOST_CA_BUNDLE" "$ROOTFS/etc/ssl/certs/ca-certificates.crt" \
            "$ROOTFS/usr/local/share/ca-certificates" <<'PY'
import re, sys, os
host, image, outdir = sys.argv[1:4]
pem = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)
norm = lambda b: "".join(b.split())
have = {norm(b) for b in pem.findall(open(image).read())} if os.path.exists(image) else set()
extra = [b for b in pem.findall(open(host).read()) if norm(b) not in have]
os.makedirs(outdir, exist_ok=True)
for i, b in enumerate(extra):
    with open(os.path.join(outdir, f"host-extra-{i}.crt"), "w") as f:
        f.write(b + "\n")
print(f"[build_base_image] {len(extra)} host-only CA certificate(s) -> /usr/local/share/ca-certificates", file=sys.stderr)
PY
        chroot "$ROOTFS" update-ca-certificates >/dev/null 2>&1 || log "WARNING: update-ca-certificates failed in the rootfs"
    fi
    cp "$HOST_CA_BUNDLE" "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
    log "copied host CA bundle ($(grep -c 'BEGIN CERTIFICATE' "$HOST_CA_BUNDLE") certificates)"
else
    log "WARNING: $HOST_CA_BUNDLE not found; keeping Debian's CA bundle"
fi

# pip configuration: replicate what the host's pip uses to reach the index (index URLs, trusted
# hosts, proxy, timeouts, cert). Host-local settings (file:// indexes, find-links and constraint
# files on the host's disk) are dropped: they don't exist inside the image.
HOST_PIP_CONFIG=$( (python3 -m pip config list 2>/dev/null || pip config list 2>/dev/null) || true)
HOST_PIP_CONFIG=$HOST_PIP_CONFIG python3 - "$ROOTFS/etc/pip.conf" <<'PY' || die "could not write pip.conf"
import os, re, sys
out = sys.argv[1]
rank = {"global": 0, "site": 1, "user": 2, ":env:": 3}   # later scopes win, env wins over files
vals = {}
for line in os.environ.get("HOST_PIP_CONFIG", "").splitlines():
    m = re.match(r"^([^.]+)\.([A-Za-z0-9_-]+)='(.*)'$", line.strip())
    if not m:
        continue
    scope, key, val = m.groups()
    r = rank.get(scope, 0)
    if key not in vals or r >= vals[key][0]:
        vals[key] = (r, val)
conf = {}
def remote(urls):
    return " ".join(u for u in urls.split() if re.match(r"https?://", u))
for key in ("index-url", "extra-index-url"):
    if key in vals and remote(vals[key][1]):
        conf[key] = remote(vals[key][1])
for key in ("trusted-host", "proxy", "retries"):
    if key in vals:
        conf[key] = vals[key][1]
for key in ("timeout", "default-timeout"):
    if key in vals:
        conf["timeout"] = vals[key][1]
# proxy from the usual variables when pip's own setting is absent
for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
    if "proxy" not in conf and os.environ.get(var):
        conf["proxy"] = os.environ[var]
conf["cert"] = "/etc/ssl/certs/ca-certificates.crt"
conf["disable-pip-version-check"] = "true"
# PEP 668 escape hatch for pip >= 23.0.1 (belt and braces with the dpkg diversion)
conf["break-system-packages"] = "true"
with open(out, "w") as f:
    f.write("# Written by deploy/docker-local/build_base_image.sh from the build host's pip settings\n[global]\n")
    for k, v in conf.items():
        f.write(f"{k} = {v}\n")
PY
log "image /etc/pip.conf:"; sed 's/^/    /' "$ROOTFS/etc/pip.conf" >&2

# Trim: apt lists and caches (debootstrap keeps the .debs), logs, host-specific files.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
    "$ROOTFS"/var/cache/apt/archives/partial/* "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/var/lib/dpkg/*-old \
    "$ROOTFS"/var/log/apt/* "$ROOTFS"/var/log/*.log "$ROOTFS"/tmp/* "$ROOTFS"/root/.cache
: >"$ROOTFS/etc/resolv.conf"   # docker bind-mounts these at run time
: >"$ROOTFS/etc/hostname"
step_done configure

# ---------------------------------------------------------------------------------------------
# ENV/CMD as in the official image (PYTHON_VERSION here is Debian's python3).
# CA variables that the host sets to its bundle are replicated, so certifi-based clients
# (requests) inside containers trust the same CAs as the host.
changes=(
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    --change 'ENV LANG=C.UTF-8'
    --change "ENV PYTHON_VERSION=$PYVER"
)
for var in REQUESTS_CA_BUNDLE SSL_CERT_FILE CURL_CA_BUNDLE; do
    if [[ ${!var:-} == "$HOST_CA_BUNDLE" ]]; then changes+=(--change "ENV $var=$HOST_CA_BUNDLE"); fi
done
changes+=(--change 'CMD ["python3"]')

step_start "docker import -> $TAG"
# dev/proc/sys are provided by the runtime; don't ship debootstrap's device nodes.
tar --numeric-owner -C "$ROOTFS" \
    --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./debootstrap' \
    -cf - . |
    docker import "${changes[@]}" \
        --message "debootstrap $SUITE minbase + python3 $PYVER from $MIRROR (deploy/docker-local/build_base_image.sh)" \
        - "$TAG" >/dev/null
step_done import

docker run --rm "$TAG" python -c 'import ssl, sys, pip; print("smoke test ok:", sys.version.split()[0], "pip", pip.__version__)' >&2 ||
    die "smoke test of $TAG failed"
if [[ -n $OLD_ID && $OLD_ID != "$(docker image inspect --format '{{.Id}}' "$TAG")" ]]; then
    # --force: drop the previous build so it doesn't linger untagged (kept if a container uses it).
    if docker rmi "$OLD_ID" >/dev/null 2>&1; then log "removed previous image ${OLD_ID:0:19}"; fi
fi
log "built $TAG: $(docker image inspect --format '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}')"
log "timings: ${TIMINGS[*]}"
