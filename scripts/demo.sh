#!/bin/sh
# make demo: the main job of qtk on a real checkpoint (stories260K, MIT):
# inspect it, convert it to NF4, show the summary, then inspect and verify
# the packed file.
set -e
QTK=${1:-build/qtk}
CKPT=tests/data/stories260K
OUT=${QTK_DEMO_OUT:-build/demo}
mkdir -p "$OUT"
echo "== qtk inspect $CKPT/model.safetensors"
"$QTK" inspect "$CKPT/model.safetensors"
echo
echo "== qtk convert $CKPT/model.safetensors -o $OUT/stories260K-nf4.qtk --scheme nf4 --group 64"
"$QTK" convert "$CKPT/model.safetensors" -o "$OUT/stories260K-nf4.qtk" --scheme nf4 --group 64 --force
echo
echo "== qtk inspect $OUT/stories260K-nf4.qtk"
"$QTK" inspect "$OUT/stories260K-nf4.qtk"
echo
echo "== qtk verify $OUT/stories260K-nf4.qtk"
"$QTK" verify "$OUT/stories260K-nf4.qtk"
