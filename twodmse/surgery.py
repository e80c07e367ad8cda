"""Gradient surgery (train key `pcgrad`): the top cell's loss and the rest of the grid's, each projected off the
other's gradient where they conflict.

PCGrad (Yu, Kumar, Gupta, Levine, Hausman and Finn, "Gradient Surgery for Multi-Task Learning", NeurIPS 2020,
arXiv:2001.06782; upstream code tianheyu927/PCGrad, PCGrad_tf.py @c5fbd7c). Each task's gradient g_i is taken
alone over all trained parameters, flattened into one vector; where g_i . g_j < 0 it loses its component along
the other task's original gradient, g_i - (g_i . g_j / |g_j|^2) g_j; the projected gradients are summed. Here the
two tasks are the top cell (L, H), what baseline trains, and everything else the method supervises (the other
cells and its alignment term): the multi-exit literature's conflict, where the shared layers' gradient from the
shallow and narrow cells works against the top cell's. With two tasks the order of projection does not matter
(upstream shuffles the tasks, but discards the shuffled tensor: `tf.random.shuffle(loss)`).

Cost: one backward pass per task instead of one in all, so a step costs about one extra backward pass.

    losses = torch.stack([top_loss, rest_loss])     # what a grid method returns with pcgrad on
    surgery.pcgrad_backward(losses, params)          # p.grad += the summed projected gradients
"""
import torch


def pcgrad_backward(task_losses, params):
    """Add to each parameter's .grad the sum of the tasks' gradients after PCGrad's projection.

    task_losses: a 1-D tensor, one loss per task; params: the trained parameters (those no task reaches get no
    gradient). Returns the tasks' gradient cosine before projection (for the logs)."""
    params = [p for p in params if p.requires_grad]
    n = len(task_losses)
    grads = [_flat(torch.autograd.grad(task_losses[i], params, retain_graph=i < n - 1, allow_unused=True), params)
             for i in range(n)]
    total = torch.zeros_like(grads[0])
    for i, g in enumerate(grads):
        for j, other in enumerate(grads):
            if j != i:
                dot = g @ other
                g = g - torch.clamp(dot, max=0) / other.square().sum().clamp_min(1e-20) * other
        total += g
    _add_grads(total, params)
    return float(grads[0] @ grads[1] / (grads[0].norm() * grads[1].norm()).clamp_min(1e-20)) if n == 2 else None


def _flat(grads, params):
    """One vector of every parameter's gradient, zeros for a parameter the task does not reach."""
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten().float()
                      for g, p in zip(grads, params)])


def _add_grads(vector, params):
    """p.grad += its slice of vector, for each parameter in order."""
    offset = 0
    for p in params:
        g = vector[offset:offset + p.numel()].view_as(p).to(p.dtype)
        offset += p.numel()
        p.grad = g.clone() if p.grad is None else p.grad + g
