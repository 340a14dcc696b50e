#!/usr/bin/env bash
# Build kube-apiserver (and nothing else) from Debian's `kubernetes` source package, offline,
# and cache the binary outside the repository so only the first run pays the ~6 min build.
# Usage: build-kube-apiserver.sh [CACHE_DIR]   -> prints the path of the binary.
set -euo pipefail
cache=${1:-${GENIE_K8S_CACHE:-/var/cache/genie-k8s}}
version=1.20.2
# r2: vendored modern-go/reflect2 1.0.1 replaced by Debian's 1.0.2. With 1.0.1, binaries built
# by Go >= 1.18 segfault (mapiterinit) whenever json-iterator encodes a map: every custom
# resource request (NetworkAttachmentDefinitions) killed the r1 apiserver.
rev=r2
bin=$cache/v$version-$rev/kube-apiserver
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
# one build at a time (parallel test runs share the cache): wait, then re-check
mkdir -p "$cache"
exec 9>"$cache/.build.lock"
flock 9
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi

need=""
for p in golang-go rsync etcd-server dpkg-dev openssl golang-github-modern-go-reflect2-dev; do dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"; done
if [ -n "$need" ]; then apt-get update -q >&2 && apt-get install -y -q $need >&2; fi

work=$cache/build
mkdir -p "$work/lists/partial" "$cache/v$version-$rev"
# deb-src is not configured on these machines: a private apt state leaves the system's alone.
mirror=$( (grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'; \
  grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}') | grep -E '/debian/?$' | head -n1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
echo "deb-src ${mirror%/} bookworm main" > "$work/sources.list"
A=(-o Dir::Etc::SourceList="$work/sources.list" -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists="$work/lists")
cd "$work"
if ! ls kubernetes_*.orig.tar.gz >/dev/null 2>&1; then
  apt-get "${A[@]}" update -q >&2
  apt-get "${A[@]}" source --download-only kubernetes >&2
fi
rm -rf "kubernetes-$version"
tar xzf kubernetes_*.orig.tar.gz
cd "kubernetes-$version"
reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
[ -f "$reflect2/reflect2.go" ] || { echo "missing $reflect2 (golang-github-modern-go-reflect2-dev)" >&2; exit 1; }
rm -rf vendor/github.com/modern-go/reflect2
mkdir -p vendor/github.com/modern-go/reflect2
find "$reflect2" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' -o -name LICENSE \) ! -name '*_test.go' \
  -exec cp {} vendor/github.com/modern-go/reflect2/ \;
mkdir -p .go/src/k8s.io && ln -sfn ../../.. .go/src/k8s.io/kubernetes
env HOME="$work" GOPATH="$PWD/.go" GOCACHE="$work/gocache" CGO_ENABLED=0 \
  KUBE_GIT_VERSION=v$version KUBE_GIT_TREE_STATE=clean \
  make WHAT=cmd/kube-apiserver >&2
install -m 0755 _output/bin/kube-apiserver "$bin.tmp" && mv "$bin.tmp" "$bin"
cd "$work" && rm -rf "kubernetes-$version"
echo "$bin"
