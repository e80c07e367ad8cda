"""twodmse: elastic (layer x dim) sentence embeddings, trained and measured."""
__version__ = "0.1.0"


def load(path, layers=None, dim=None, **kw):
    """A trained checkpoint as an encoder that really runs only `layers` layers and keeps `dim` dims."""
    from .inference import load_elastic
    return load_elastic(path, layers=layers, dim=dim, **kw)
