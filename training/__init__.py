"""Offline training of the facegen VAE-GAN; exports artifacts for the service."""
