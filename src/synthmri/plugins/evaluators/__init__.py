"""Built-in evaluators: classification, intensity, segmentation, image quality, privacy."""
