//! Multi-crop views with the DINO augmentations.
