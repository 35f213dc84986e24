"""The image model: reading, merging and writing container images."""
