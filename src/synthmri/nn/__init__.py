"""Model code that plugins share: networks, losses, training blocks and tensor helpers.

Plugins import from here (inside the methods that train or sample), never from each
other. Importing this package loads nothing; the modules import torch, except
``params`` and ``diffaugment``, which plugin modules import at module level:

- ``tensors``: [-1, 1] <-> [0, 1], seeded latents, image/mask split, batch diversity,
  index blocks;
- ``diffaugment``: DiffAugment (Zhao et al. 2020) on image batches, and its policy;
- ``ema``: an exponential moving average of a network's weights;
- ``batchnorm``: BatchNorm statistics recomputed for final (or averaged) weights;
- ``layers``: small modules (input normalisation);
- ``dcgan``: the DCGAN and reference-Keras generators and discriminators, the
  conditional input and the projection head;
- ``gan_training``: GAN losses (BCE, hinge), R1, mode seeking, minibatch std,
  PixelNorm and the adaptive augmentation (ADA) controller;
- ``wgan``: the WGAN-GP critic and the gradient penalty;
- ``oneshot``: the One-Shot GAN networks, feature augmentation and losses;
- ``vae``: the convolutional VAE, its losses, its training loop and a trained-model
  wrapper; ``params``: param models shared by plugins (no torch);
- ``features``: the networks of the evaluators' feature extractors.
"""
