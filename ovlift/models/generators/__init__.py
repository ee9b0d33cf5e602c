"""Image generators for SAS's capability estimation: images of one class with a pseudo mask."""
