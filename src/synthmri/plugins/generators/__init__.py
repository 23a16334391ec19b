"""Built-in generators: DCGAN, WGAN-GP, One-Shot GAN, VAE, and the helpers they share."""
