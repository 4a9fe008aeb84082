"""Image sources (digits, image folders, torchvision sets), datasets and augmentation pipelines."""
