"""Training: the solver base both trainers derive from (`base`), the VQ-VAE trainer (`vqvae`), the unit learning
curves it logs (`curves`), run directories (`runs`) and torchrun ranks (`distributed`). Never imports evaluation."""
