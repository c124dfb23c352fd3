"""Adam (Kingma & Ba 2015), minimising, for the engine's small searches (PGD attacks, slope optimisation).

Written out because importing torch.optim pulls in torch's compiler stack, about 1.5 s per process, which would
dominate the start-up of a verification."""
from __future__ import annotations

import torch


class Adam:
    def __init__(self, params, lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
        self.params, self.lr, self.b1, self.b2, self.eps, self.t = list(params), lr, b1, b2, eps, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, grads, lr=None):
        """One update of every parameter from its gradient (NaN gradients count as 0); lr, a float or a tensor
        broadcasting against the parameters, overrides the step size for this update."""
        self.t += 1
        lr = self.lr if lr is None else lr
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            g = torch.nan_to_num(g)
            m.mul_(self.b1).add_(g, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            p.sub_(lr * (m / c1) / ((v / c2).sqrt() + self.eps))
