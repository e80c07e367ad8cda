"""A trained checkpoint cut to one (layer, width) cell for deployment: twodmse.load(path, layers=k, dim=d).

The layers above k are really dropped (backbone.truncate), so encoding costs k layers; the training loop is
not imported."""
import numpy as np
import torch
from torch import nn

from . import backbone


class ElasticEncoder(nn.Module):
    """A checkpoint cut to its first k layers and d dims: what a deployment of cell (k, d) would run."""

    def __init__(self, encoder, dim=None, normalize=False):
        super().__init__()
        self.encoder, self.dim, self.normalize = encoder, dim or encoder.hidden_size, normalize

    def forward(self, input_ids, attention_mask):
        return self.encoder.last_layer(input_ids, attention_mask)[:, :self.dim]

    @torch.inference_mode()
    def encode(self, sentences, batch_size=64):
        """Sentences -> float32 array [N, dim] (L2-normalised when normalize=True)."""
        out = []
        for start in range(0, len(sentences), batch_size):
            f = self.encoder.tokenize(sentences[start:start + batch_size]).to(self.encoder.device)
            emb = self(f["input_ids"], f["attention_mask"]).float()
            out.append(nn.functional.normalize(emb, dim=-1) if self.normalize else emb)
        return torch.cat(out).cpu().numpy() if out else np.zeros((0, self.dim), np.float32)


def load_elastic(path, layers=None, dim=None, normalize=False, device=None, pooling=None, max_length=None):
    """Load a model that really runs only `layers` transformer layers and returns `dim`-wide embeddings."""
    enc = backbone.load(str(path), pooling=pooling, max_length=max_length, device=device, layers=layers)
    if dim is not None and not 1 <= dim <= enc.hidden_size:
        raise ValueError(f"dim must be in 1..{enc.hidden_size}, got {dim}")
    return ElasticEncoder(enc, dim, normalize).eval()
