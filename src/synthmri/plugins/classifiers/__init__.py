"""Built-in classifiers: torchvision ResNet / MobileNetV2 and the small brain_cnn."""
