#!/usr/bin/env bash
# The README's first command runs this from the checkout: train on the shipped demo corpus (model=units_cpc, then the
# speech path on its frozen units: ~10 min on a 2-core CPU), then use the checkpoint as users do: extract units for
# the whole corpus, resynthesise one utterance in its own voice and convert it to two other speakers.
# Usage: bash demo.sh [RUN_DIR [TRAINING OVERRIDES...]]   e.g. bash demo.sh runs/quick model=tiny trainer.max_steps=20
#        bash demo.sh --pretrained [OUT_DIR]           the same with the shipped model instead of training (~1 min)
# SPEECH_OVERRIDES="..." (space-separated) go to the speech path's training, e.g. "speech=tiny trainer.max_steps=2".
set -euo pipefail
cd "$(dirname "$0")"
if [[ "${1:-}" == "--pretrained" ]]; then
    RUN="${2:-runs/pretrained}"
    CKPT=pretrained/demo-units
else
    RUN="${1:-runs/demo}"
    CKPT="$RUN/speech/checkpoints/last.pt"
    audio-vqvae-train run_dir="$RUN" trainer.max_steps=600 "${@:2}"  # the 10-minute budget on 2 cores
    # shellcheck disable=SC2086  # the overrides are words
    audio-vqvae-train-speech vqvae="$RUN/checkpoints/best.pt" run_dir="$RUN/speech" \
        ${SPEECH_OVERRIDES:-}
fi
UTT=datasets/demo/gb_f/gb_f_031.flac

audio-vqvae-units -c "$CKPT" -o "$RUN/units/demo.txt" --data demo
audio-vqvae-generate -c "$CKPT" -o "$RUN/wav" "$UTT" --speaker gb_f,sc_m,cb_f

echo
echo "model:           $CKPT"
echo "units:           $RUN/units/demo.txt (+ .json sidecar)"
echo "resynthesis:     $RUN/wav/gb_f_031_to_gb_f.wav"
echo "conversions:     $RUN/wav/gb_f_031_to_sc_m.wav $RUN/wav/gb_f_031_to_cb_f.wav"
[[ -d "$RUN/tb" ]] && echo "TensorBoard:     tensorboard --logdir $RUN/tb (VQ-VAE), $RUN/speech/tb (speech path)"
echo "evaluate:        audio-vqvae-eval $CKPT --data demo_heldout --out $RUN/eval"
