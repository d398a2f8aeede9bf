#!/usr/bin/env bash
# Builds the local Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, kwok, helm) from Go modules
# and caches the binaries under ~/.cache/ferry/k8s/<versions>/bin.
#
# Called by `make controlplane` (and so by `make run` / `make test`). Honours
# KUBEBUILDER_ASSETS: when it already holds etcd and kube-apiserver nothing is
# built. Prints the bin directory on the last line of stdout.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
HELM_VERSION=${HELM_VERSION:-v4.3.1}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

cache_root=${FERRY_CACHE_DIR:-$HOME/.cache/ferry}
stamp_name="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}"
bin_dir="$cache_root/k8s/$stamp_name/bin"
work="$cache_root/k8s/$stamp_name/src"
start=$(date +%s)

log() { printf '[controlplane %4ss] %s\n' "$(( $(date +%s) - start ))" "$*" >&2; }

if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/etcd" ] && [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ]; then
  log "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

all=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm)
missing=()
for b in "${all[@]}"; do [ -x "$bin_dir/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -eq 0 ] && [ -f "$bin_dir/.stamp" ]; then
  echo "$bin_dir"
  exit 0
fi

mkdir -p "$bin_dir" "$work"
build_log="$work/build.log"
: > "$build_log"
log "building ${missing[*]} into $bin_dir (a cold build takes 10-30 minutes on 2 cores)"
log "go's own output (module downloads, compiler messages) goes to $build_log"

# Run a go command with its output in the build log; on failure show its tail.
quiet() {
  if ! "$@" >>"$build_log" 2>&1; then
    log "failed: $*"
    tail -n 40 "$build_log" >&2
    return 1
  fi
}

# A heartbeat so that a long `go build` is never a silent wait.
current="$work/.current"
( while sleep 30; do log "still building $(cat "$current" 2>/dev/null)"; done ) &
beat=$!
trap 'kill $beat 2>/dev/null || true' EXIT

build_k8s() {
  local name=$1 pkg=$2 dir="$work/kubernetes"
  mkdir -p "$dir"
  if [ ! -f "$dir/go.mod" ]; then
    log "preparing wrapper module for k8s.io/kubernetes@$K8S_VERSION"
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" 2>>"$build_log" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
    local minor_patch=${K8S_VERSION#v1.}
    {
      echo "module ferry.dev/controlplane"
      echo
      echo "go 1.26"
      echo
      echo "require k8s.io/kubernetes $K8S_VERSION"
      echo
      # Every staging module is required at v0.0.0 upstream and replaced by a
      # ./staging path that only exists inside the kubernetes repository; point
      # each at its published v0.<minor>.<patch> instead.
      grep -E '^\s*k8s.io/[a-z0-9-]+ => \./staging' "$gomod" | awk -v v="v0.$minor_patch" '{print "replace " $1 " => " $1 " " v}'
    } > "$dir/go.mod"
    printf 'package tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n\t_ "k8s.io/kubernetes/cmd/kube-controller-manager"\n\t_ "k8s.io/kubernetes/cmd/kube-scheduler"\n\t_ "k8s.io/kubernetes/cmd/kubectl"\n)\n' > "$dir/tools.go"
    sed -i 's/^package tools/\/\/go:build tools\n\npackage tools/' "$dir/tools.go"
    (cd "$dir" && go mod tidy -e >/dev/null 2>&1 || true)
  fi
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local pkgv="k8s.io/component-base/version" cgv="k8s.io/client-go/pkg/version"
  local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local ld="-s -w"
  for p in $pkgv $cgv; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=$date -X $p.gitCommit=0000000000000000000000000000000000000000"
  done
  echo "$name" > "$current"
  log "go build $name ($pkg)"
  (cd "$dir" && quiet go build -trimpath -ldflags "$ld" -o "$bin_dir/$name" "$pkg")
  log "built $name"
}

build_mod() {
  local name=$1 mod=$2 version=$3 pkg=$4 dir="$work/$1"
  mkdir -p "$dir"
  if [ ! -f "$dir/go.mod" ]; then
    (cd "$dir" && quiet go mod init "ferry.dev/build-$name" && quiet go get "$mod@$version")
  fi
  echo "$name" > "$current"
  log "go build $name ($pkg@$version)"
  (cd "$dir" && quiet go build -trimpath -ldflags "-s -w $5" -o "$bin_dir/$name" "$pkg")
  log "built $name"
}

for b in "${missing[@]}"; do
  case $b in
    etcd) build_mod etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" go.etcd.io/etcd/server/v3 "" ;;
    kwok) build_mod kwok sigs.k8s.io/kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" ;;
    helm) build_mod helm helm.sh/helm/v4 "$HELM_VERSION" helm.sh/helm/v4/cmd/helm "-X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" ;;
    kube-apiserver|kube-controller-manager|kube-scheduler|kubectl) build_k8s "$b" "k8s.io/kubernetes/cmd/$b" ;;
  esac
done

# kwok's default stages ship inside its module; copy them next to the binaries.
kwok_dir=$(cd "$work/kwok" 2>/dev/null && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok 2>/dev/null || true)
if [ -n "$kwok_dir" ]; then
  mkdir -p "$bin_dir/../stages"
  for s in node/fast node/heartbeat-with-lease pod/fast; do
    for f in "$kwok_dir"/kustomize/stage/$s/*.yaml; do
      [ -f "$f" ] || continue
      case $(basename "$f") in kustomization.yaml) continue ;; esac
      cp "$f" "$bin_dir/../stages/$(echo "$s" | tr / -)-$(basename "$f")"
    done
  done
fi

echo "$stamp_name built $(date -u +%FT%TZ) in $(( $(date +%s) - start ))s" > "$bin_dir/.stamp"
log "done"
echo "$bin_dir"
