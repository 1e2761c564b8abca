"""Thin console apps (argument parsing + library calls): `audio-vqvae-train`, `-units`, `-generate`, `-eval`.
No app imports another; what they share lives in `cli.common` and the library."""
