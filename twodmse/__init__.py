"""twodmse: elastic (layer x dim) sentence embeddings, trained and measured."""
__version__ = "0.1.0"
