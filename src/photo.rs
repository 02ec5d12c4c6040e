//! Finding and decoding a user's photos.
