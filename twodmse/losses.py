"""AnglE's base losses, computed for many (layer, width) cells of the grid in one vectorized pass.

The base losses follow SeanLee97/AnglE `angle_emb/angle.py` (read in the angle-emb 0.3.10 wheel and the
current main branch): CoSENT `cosine_loss`, `angle_loss` (complex-space angle difference),
`in_batch_negative_loss` (pairs) / `contrastive_with_negative_loss` (triplets), combined as `AngleLoss` does:
    loss = cosine_w * cosent + ibn_w * ibn + angle_w * angle
Triplets (anchor, positive, negative) are scored as AnglE's DatasetFormats.B: CoSENT and angle rank the B
(anchor, positive) pairs (label 1) above the B (anchor, negative) pairs (label 0); ibn is a softmax of each
anchor over all positives and hard negatives of the batch.
Scored pairs with ibn_w > 0 follow AnglE's pair ibn: each of the 2B sentences must pick its partner among the
other 2B-1; a pair counts as a positive when int(label) != 0 (AnglE casts labels to int), other rows add 0 to
the mean. (AnglE's index-product target matrix can also mark spurious targets for labels > 1; we do not.)

Shapes: a "cell" is one (layer, width). x is [C, N, H] (C layers), widths an int64 tensor [D] on x's device;
cell losses come back as [C, D]. Widths are prefixes: width d uses x[..., :d].
"""
import torch
import torch.nn.functional as F

from .schema import Value, check_all

DEFAULTS = {2: dict(cosine_w=1.0, ibn_w=0.0, angle_w=0.0, cosine_tau=20.0, ibn_tau=20.0, angle_tau=20.0),
            3: dict(cosine_w=0.0, ibn_w=1.0, angle_w=0.0, cosine_tau=20.0, ibn_tau=20.0, angle_tau=20.0)}
EPS = 1e-8  # floor on vector norms: a zero prefix gives cosine 0, not NaN


WEIGHT = "a negative weight climbs its loss"
TAU = "0 divides by zero, a negative one reverses the ranking"
# The `loss` keys of a training config, declared once (defaults: those of pairs; DEFAULTS[3] for triplets).
KEYS = {
    "cosine_w": Value(1.0, float, "weight of CoSENT", low=0, why=WEIGHT),
    "ibn_w": Value(0.0, float, "weight of the in-batch negatives loss", low=0, why=WEIGHT),
    "angle_w": Value(0.0, float, "weight of the angle loss", low=0, why=WEIGHT),
    "cosine_tau": Value(20.0, float, "CoSENT's scale (cosines x tau)", above=0, why=TAU),
    "ibn_tau": Value(20.0, float, "the in-batch negatives' scale", above=0, why=TAU),
    "angle_tau": Value(20.0, float, "the angle loss's scale", above=0, why=TAU),
}


def config(loss_cfg, k):
    """User loss weights over the defaults for k columns (pairs: CoSENT only; triplets: ibn only)."""
    check_all(KEYS, loss_cfg or {}, "loss")
    return {**DEFAULTS[k], **(loss_cfg or {})}


def prefix_sums(x, widths):
    """Sum over the first d entries of the last axis, for every d in widths: [..., H] -> [..., D]."""
    return x.cumsum(-1).index_select(-1, widths - 1)


def _norm(sq):
    return sq.clamp_min(EPS * EPS).sqrt()  # clamp before sqrt: sqrt'(0) is inf


def pair_cosine(u, v, widths):
    """Cosine of row i of u with row i of v at every width: [C, P, H] x2 -> [C, D, P]."""
    dot = prefix_sums(u * v, widths)
    cos = dot / (_norm(prefix_sums(u * u, widths)) * _norm(prefix_sums(v * v, widths)))
    return cos.transpose(1, 2)


def pair_angle(u, v, widths):
    """AnglE's |Re + Im| of (u / v) * |v| / |u|, with real = first d/2 and imag = next d/2 of each prefix.

    Summed over entries this is (u.v + sum_j<d/2 u[d/2+j] v[j] - u[j] v[d/2+j]) / (|u| |v|), so the real part
    is a prefix sum and only the cross term needs a gather per width.  [C, P, H] x2 -> [C, D, P]."""
    H = u.shape[-1]
    j = torch.arange(H // 2, device=u.device)
    half = (widths // 2)[:, None]
    keep = (j < half).to(u.dtype)                         # [D, J]
    hi = (half + j).clamp(max=H - 1)                      # index of imag part j, per width
    u_lo, v_lo = u[..., None, :H // 2], v[..., None, :H // 2]
    cross = ((u[..., hi] * v_lo - u_lo * v[..., hi]) * keep).sum(-1)   # [C, P, D]
    s = (prefix_sums(u * v, widths) + cross) / (
        _norm(prefix_sums(u * u, widths)) * _norm(prefix_sums(v * v, widths)))
    return s.abs().transpose(1, 2)


def cell_similarities(x, y, widths):
    """Cosine similarity matrix of every row of x with every row of y, per width: -> [C, D, N, M]."""
    mask = (torch.arange(x.shape[-1], device=x.device) < widths[:, None]).to(x.dtype)   # [D, H]
    dots = (x[:, None] * mask[:, None, :]) @ y[:, None].transpose(-1, -2)              # [C, D, N, M]
    nx = _norm(prefix_sums(x * x, widths)).transpose(1, 2)                              # [C, D, N]
    ny = _norm(prefix_sums(y * y, widths)).transpose(1, 2)
    return dots / (nx[..., :, None] * ny[..., None, :])


def rank_loss(scores, labels):
    """CoSENT ranking: log(1 + sum over label_i < label_j of exp(s_i - s_j)). [C, D, P], [P] -> [C, D]."""
    diff = scores[..., :, None] - scores[..., None, :]
    diff = diff.masked_fill(~(labels[:, None] < labels[None, :]), float("-inf")).flatten(-2)
    return torch.logsumexp(F.pad(diff, (1, 0)), -1)  # the padded 0 is the "1 +"


def ibn_pairs(a, b, positive, widths, tau):
    """AnglE in_batch_negative_loss: each of the 2B rows picks its partner among the other 2B-1."""
    x = torch.cat([a, b], 1)
    n = x.shape[1]
    logits = cell_similarities(x, x, widths) * tau
    logits = logits.masked_fill(torch.eye(n, dtype=torch.bool, device=x.device), float("-inf"))
    rows = torch.arange(n, device=x.device)
    ce = -logits.log_softmax(-1)[..., rows, (rows + n // 2) % n]                        # [C, D, 2B]
    return (ce * positive.repeat(2).to(ce.dtype)).mean(-1)


def ibn_triplets(a, p, neg, widths, tau):
    """AnglE contrastive_with_negative_loss: anchor i picks positive i among all positives and negatives."""
    logits = cell_similarities(a, torch.cat([p, neg], 1), widths) * tau                 # [C, D, B, 2B]
    rows = torch.arange(a.shape[1], device=a.device)
    return -logits.log_softmax(-1)[..., rows, rows].mean(-1)


def cell_losses(x, k, labels, widths, cfg):
    """Combined AnglE loss of every cell. x [C, kB, H] (rows: first, second[, negative]) -> [C, D]."""
    B = x.shape[1] // k
    a, b = x[:, :B], x[:, B:2 * B]
    if k == 2:
        u, v, y = a, b, labels.float()
    else:
        neg = x[:, 2 * B:]
        u, v = torch.cat([a, a], 1), torch.cat([b, neg], 1)
        y = torch.cat([torch.ones(B, device=x.device), torch.zeros(B, device=x.device)])
    out = x.new_zeros(x.shape[0], len(widths))
    if cfg["cosine_w"]:
        out = out + cfg["cosine_w"] * rank_loss(pair_cosine(u, v, widths) * cfg["cosine_tau"], y)
    if cfg["angle_w"]:
        out = out + cfg["angle_w"] * rank_loss(pair_angle(u, v, widths) * cfg["angle_tau"], y)
    if cfg["ibn_w"]:
        ibn = (ibn_pairs(a, b, labels.trunc() != 0, widths, cfg["ibn_tau"]) if k == 2
               else ibn_triplets(a, b, neg, widths, cfg["ibn_tau"]))
        out = out + cfg["ibn_w"] * ibn
    return out


def to_device(t, device):
    """Host tensor -> device without a host/device sync (pinned, non-blocking copy)."""
    if device.type == "cpu":
        return t
    return t.pin_memory().to(device, non_blocking=True)


def active(W):
    """The rows (layers) and columns (widths) of W [L, D] that hold a nonzero weight, as lists (read on the host)."""
    return W.abs().sum(1).nonzero().flatten().tolist(), W.abs().sum(0).nonzero().flatten().tolist()


def grid_loss(emb, k, labels, W, dims, cfg):
    """sum(W * cell_loss) over the grid. emb [L, kB, H]; W [L, len(dims)] host tensor (0 = not supervised).

    Only layers and widths with a nonzero weight are computed; they are found from W on the host, so
    nothing waits on the device. Returns (loss, cell losses [L', D'] of the active rows/columns)."""
    rows, cols = active(W)
    if not rows:
        raise ValueError("the weight matrix W supervises no cell")
    x = torch.stack([emb[i] for i in rows]).float()  # views, no index tensor to copy to the device
    widths = to_device(torch.tensor([dims[j] for j in cols]), emb.device)
    w = to_device(W[rows][:, cols].float(), emb.device)
    with torch.autocast(emb.device.type, enabled=False):  # similarities in fp32 even under bf16 training
        cells = cell_losses(x, k, labels, widths, cfg)
    cells = torch.where(w != 0, cells, torch.zeros_like(cells))  # an unweighted NaN cell must not give 0*NaN
    return (w * cells).sum(), cells


def kl_div(student, teacher, widths=None, temperature=1.0):
    """KL(softmax(teacher/T) || softmax(student/T)) over the hidden axis, batchmean, as AnglE's
    nn.KLDivLoss(reduction='batchmean')(log_softmax(student/T), softmax(teacher/T)).
    student/teacher [K, N, H] -> [K]; widths [K] (optional) restricts pair k to its first widths[k] entries."""
    s, t = student.float() / temperature, teacher.float() / temperature
    if widths is not None:
        # -1e30, not -inf: exp underflows to 0 and (t - s) stays finite, so no 0 * NaN in the backward pass.
        cut = torch.arange(s.shape[-1], device=s.device) >= widths[:, None, None]
        s, t = s.masked_fill(cut, -1e30), t.masked_fill(cut, -1e30)
    log_s, log_t = s.log_softmax(-1), t.log_softmax(-1)
    return (log_t.exp() * (log_t - log_s)).sum((-1, -2)) / s.shape[1]
