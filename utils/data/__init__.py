"""Data: the data YAML (config), image and label files (images, labels), the training dataset and its loader
(dataset), augmentation (augment), and the sources detect.py reads (sources)."""
