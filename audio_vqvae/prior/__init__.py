"""Stage two: the unit prior (`model`), units files as its training data (`data`) and its trainer (`training`, a
sibling of the VQ-VAE trainer on the solver base in audio_vqvae/training)."""
