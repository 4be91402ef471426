"""The data side: datasets and their loaders, augmentation, batched augmentation and the decode cache."""
