#!/usr/bin/env bash
# prebuild_peer.sh — the CUDA build of another commit (PEER, default HEAD: this tree before its
# uncommitted changes), made on this machine as prebuild.sh makes this tree's, into
# .gpu-build/peer.tar.xz, so that one GPU call measures a change against the code before it
# (tools/device/tree_ab.sh) where the change is not an environment switch:
#   bash tools/device/prebuild.sh && PEER=HEAD bash tools/device/prebuild_peer.sh
# (prebuild.sh leaves it alone). The peer is built in a worktree under /tmp.
set -euo pipefail
cd "$(dirname "$0")/../.."
rev=$(git rev-parse --short "${PEER:-HEAD}")
wt=/tmp/mb-peer-$rev
[ -d "$wt" ] || git worktree add --detach "$wt" "$rev" >/dev/null
(cd "$wt" && bash tools/device/prebuild.sh >/dev/null)
mkdir -p .gpu-build
cp "$wt/.gpu-build/prebuilt.tar.xz" .gpu-build/peer.tar.xz
echo "$rev" >.gpu-build/PEER
echo "peer: .gpu-build/peer.tar.xz ($rev, $(du -k .gpu-build/peer.tar.xz | cut -f1) KiB)"
