"""2D teachers: frames in, per-pixel features in a text-embedding space out (``base``); ``registry`` lists them."""
