#!/bin/sh
# make demo: the main job of qtk on a real checkpoint (stories260K).
set -e
QTK=${1:-build/qtk}
CKPT=tests/data/stories260K
[ -d ../shared/ckpts/stories260K ] && CKPT=../shared/ckpts/stories260K
echo "== qtk inspect $CKPT/model.safetensors"
"$QTK" inspect "$CKPT/model.safetensors"
