"""digits_app: an MLP trained with Flower on scikit-learn's bundled 8x8 digits."""
