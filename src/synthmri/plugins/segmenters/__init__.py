"""Built-in segmenters: MONAI UNet and Attention UNet."""
