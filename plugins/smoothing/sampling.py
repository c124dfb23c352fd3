"""Batched, seeded Monte-Carlo counting of a base classifier's votes under random input perturbations.

Memory is flat in the number of samples: at most `batch` perturbed inputs exist at once and the counts live in
one [num_classes] int64 tensor on the model's device. Reproducibility: everything random comes from the
`torch.Generator` passed in; `sample_generator(seed, idx, device)` builds the per-sample generator from
(seed, idx) so results do not depend on which other samples are certified or in which order.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

NoiseFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def sample_seed(seed: int, idx: int, *extra: int) -> int:
    """A 63-bit seed derived from (seed, idx, *extra) with numpy's SeedSequence (well-mixed, order-sensitive)."""
    words = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, int(idx) & 0xFFFFFFFFFFFFFFFF,
                                    *[int(e) & 0xFFFFFFFFFFFFFFFF for e in extra]]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def sample_generator(seed: int, idx: int, device="cpu") -> torch.Generator:
    """A torch.Generator on `device` seeded from (seed, idx)."""
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(sample_seed(seed, idx))
    return g


def gaussian_noise(sigma: float) -> NoiseFn:
    """noise_fn adding i.i.d. N(0, sigma^2) to every input coordinate (in the model's input space)."""
    sigma = float(sigma)

    def noise_fn(batch_x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        eps = torch.randn(batch_x.shape, generator=generator, device=batch_x.device, dtype=batch_x.dtype)
        return batch_x + eps.mul_(sigma)

    return noise_fn


def _votes(out: torch.Tensor) -> torch.Tensor:
    return out.reshape(out.shape[0], -1).argmax(dim=1)


@torch.inference_mode()
def count_classes(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, noise_fn: NoiseFn, num: int,
                  batch: int, num_classes: int, generator: torch.Generator) -> np.ndarray:
    """Counts of argmax f(noise_fn(x)) over `num` perturbed copies of one input x [*input_shape].

    f maps [b, *input_shape] to logits [b, K] (K = num_classes). noise_fn(batch_x, generator) receives a
    read-only expanded view batch_x [b, *input_shape] of x (on x's device and dtype) and must return a new
    perturbed tensor of that shape, drawing all randomness from `generator`. Draws are consumed from the
    generator in order, so successive calls with the same generator see fresh, never reused, noise.
    Returns int64 numpy counts [num_classes].
    """
    num, batch = int(num), int(batch)
    if batch <= 0:
        raise ValueError(f"batch must be positive, got {batch}")
    counts = torch.zeros(int(num_classes), dtype=torch.int64, device=x.device)
    remaining = num
    while remaining > 0:
        b = min(batch, remaining)
        xb = noise_fn(x.unsqueeze(0).expand(b, *x.shape), generator)
        counts += torch.bincount(_votes(f(xb)), minlength=int(num_classes))[: int(num_classes)]
        remaining -= b
    return counts.cpu().numpy()


def progress(items, enabled: bool, desc: str = "certify"):
    """`items`, wrapped in a tqdm progress bar (on stderr) when enabled."""
    if not enabled:
        return items
    from tqdm import tqdm
    return tqdm(items, desc=desc, unit="sample")
