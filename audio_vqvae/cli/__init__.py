"""Thin console apps (argument parsing + library calls): `audio-vqvae-units`, `audio-vqvae-generate`. No app imports
another; what they share lives in `cli.common` and the library."""
