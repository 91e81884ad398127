#!/usr/bin/env bash
# The Debian packages the test tiers need beyond Python 3.11, git and make. As root on Debian
# (a fresh CI machine) it installs the missing ones; elsewhere it names them and exits 0, and
# the tiers that need them skip, each saying so at the end of the test run.
#   scripts/system-packages.sh          install what is missing (root + apt-get), else list it
#   scripts/system-packages.sh --check  only list what is missing (exit 1 when something is)
set -euo pipefail

# tool  package          the tiers that need it
TOOLS=(
  "initdb postgresql the local stack's database (tests/integration, tests/e2e stack runs, tests/ci)"
  "podman podman the step images and the chart's pods (tests/containers, tests/chart, tests/ci)"
  "runc runc podman's runtime here (crun fails on this kernel's cgroups)"
  "debootstrap debootstrap a Debian base image where no registry can be reached"
  "npm npm helm, kubectl and gitlab-ci-local come from npm (tests/chart, tests/ci)"
  "rsync rsync gitlab-ci-local's shell executor (tests/ci)"
  "skopeo skopeo pushing images to a registry (tests/ci)"
  "docker-registry docker-registry a local OCI registry (tests/ci)"
)

found() {
  case "$1" in
    initdb) command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}

missing=()
for entry in "${TOOLS[@]}"; do
  read -r tool package why <<<"$entry"
  found "$tool" || missing+=("$package")
done
((${#missing[@]})) || exit 0

if [[ "${1:-}" == "--check" ]]; then
  echo "missing system packages: ${missing[*]}"
  exit 1
fi
if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-packages: not installing ${missing[*]} (needs root and apt-get); the tiers that"
  echo "  need them will skip. To install them: sudo make system-packages"
  exit 0
fi
echo "system-packages: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
