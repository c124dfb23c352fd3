"""The LipLT certificate domain: certified l2 (and l_inf) radii from certified pairwise Lipschitz bounds.

For an input x with predicted class y, f_y - f_j can drop by at most L_yj ||delta||_2, so the prediction cannot
change inside the l2 ball of radius min_{j != y} (f_y(x) - f_j(x)) / L_yj (Fazlyab et al., NeurIPS 2023). The
logits are computed in float64 with a guaranteed rounding-error bound (rounding.py), L_yj is a certified upper bound
(bound.py), and the quotient is rounded down, so the reported radius is a guaranteed lower bound. The l_inf
ball of radius r / sqrt(d) lies inside the l2 ball of radius r (d = input dimension).
"""
from __future__ import annotations

import math
import time

import torch

from nncert.engine.domain import Domain
from nncert.engine.errors import BadInput

from . import bound
from .dense import round_down
from .rounding import forward_with_error
from .structure import SUPPORTED_OPS


class LipLT(Domain):
    name = "liplt"
    guarantee = "sound"
    input_sets = ("l2", "linf")
    description = ("certified Lipschitz bounds (LipLT recursion / naive product, Gram-iteration spectral norms) "
                   "and certified l2 / l_inf radii margin / L_ij")

    def __init__(self, op_rules=None):
        super().__init__(op_rules)
        self._cache: dict = {}

    def supported_ops(self) -> list[str]:
        return sorted(set(SUPPORTED_OPS) | set(self.op_rules))

    def lipschitz(self, network, method: str = "liplt", pairwise: bool = False) -> dict:
        """dict(method, global, pairwise (n_out x n_out list of lists, or None), seconds): certified l2->l2
        Lipschitz bounds of the network (global) and of each logit difference f_i - f_j (pairwise)."""
        key = (id(network), method, pairwise)
        hit = self._cache.get(key)
        if hit is None or hit[0] is not network:  # an id can be reused once a network is freed
            hit = self._cache[key] = (network, bound.lipschitz(network, method, pairwise))
        return hit[1]

    def certify(self, model, x: torch.Tensor, y: torch.Tensor, options: dict) -> list[dict]:
        """Options: eps (float, radius to certify, in `norm`), norm ("l2" default | "linf"), method ("liplt"
        default | "naive"), indices (dataset indices for the records; default 0..N-1). Per sample: idx, label, predict, radius (certified radius in `norm`, 0 when
        misclassified), radius_l2, certified (radius > eps), correct, time (seconds; the one-off Lipschitz
        computation is shared equally among the samples)."""
        eps = options.get("eps")
        if eps is None or not isinstance(eps, (int, float)) or eps < 0:
            raise BadInput(f"liplt certify needs option eps >= 0 (got {eps!r})")
        norm = options.get("norm", "l2")
        if norm not in ("l2", "linf"):
            raise BadInput(f"liplt certifies norm l2 or linf, not {norm!r}")
        method = options.get("method", "liplt")
        lip = self.lipschitz(model, method, pairwise=True)
        Lp = torch.tensor(lip["pairwise"], dtype=torch.float64)
        n = len(x)
        idxs = list(options.get("indices") or range(n))
        if len(idxs) != n:
            raise BadInput(f"option 'indices' has {len(idxs)} entries for {n} inputs")
        share = lip["seconds"] / max(n, 1)
        d = model.n_inputs
        net64 = model.to(torch.float64)
        out = []
        for i in range(n):
            t0 = time.perf_counter()
            xi = x[i:i + 1].to(torch.float64).reshape(1, *model.input_shape)
            logits, err = forward_with_error(net64, xi)
            logits, err = logits[0], err[0]
            lo, hi = logits - err, logits + err
            pred = int(torch.argmax(logits))
            label = int(y[i])
            r = 0.0
            if pred == label:
                others = [j for j in range(len(logits)) if j != pred]
                slack = 4 * 2.0 ** -53 * (logits[pred].abs() + logits[others].abs() + err[pred] + err[others])
                margins = (lo[pred] - hi[others] - slack) * (1 - 1e-12) - 1e-300   # rounding of these subtractions
                if bool((margins > 0).all()):
                    ratios = margins / Lp[pred, others]
                    r = round_down(float(ratios.min()) * (1 - 1e-12), 2)
                    r = max(r, 0.0)
            r_norm = r if norm == "l2" else max(round_down(r / math.sqrt(d) * (1 - 1e-12), 2), 0.0)
            out.append({"idx": int(idxs[i]), "label": label, "predict": pred, "radius": r_norm, "radius_l2": r, "norm": norm,
                        "certified": bool(pred == label and r_norm > eps), "correct": pred == label,
                        "time": time.perf_counter() - t0 + share})
        return out
