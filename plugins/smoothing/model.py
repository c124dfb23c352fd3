"""Adapting base classifiers for smoothing: IR Networks and torch callables, on the chosen device."""
from __future__ import annotations

from typing import Callable

import torch

from nncert.engine.errors import BadInput


def resolve_device(device) -> torch.device:
    """torch.device from a string/device; BadInput when CUDA is asked for but not available."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise BadInput(f"bad device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadInput(f"device {device!r} requested but CUDA is not available")
    return dev


def as_classifier(model, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable [B, *input_shape] -> logits [B, K] running on `device`.

    An IR Network (has .forward and .input_shape) is copied to the device; a torch.nn.Module is moved there and
    put in eval mode (in place); any other callable is used as is (it must accept tensors on `device`).
    Noise is added to what this callable receives, i.e. before any normalisation the model itself applies.
    """
    if hasattr(model, "input_shape") and hasattr(model, "forward") and hasattr(model, "nodes"):
        return model.to(device=device)
    if isinstance(model, torch.nn.Module):
        return model.to(device).eval()
    if not callable(model):
        raise BadInput(f"model must be an nncert Network or a torch callable, got {type(model).__name__}")
    return model


def check_inputs(model, x: torch.Tensor) -> None:
    """BadInput when x is not [N, *input_shape] of a Network model, or holds NaN/Inf."""
    if not isinstance(x, torch.Tensor):
        raise BadInput(f"inputs must be a torch.Tensor, got {type(x).__name__}")
    if not torch.isfinite(x).all():
        raise BadInput("inputs contain NaN or Inf")
    shape = getattr(model, "input_shape", None)
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        if len(x) and x[0].numel() == int(torch.Size(shape).numel()):
            return  # same number of values per sample: reshape_inputs reshapes it
        raise BadInput(f"inputs have shape {tuple(x.shape[1:])} per sample, the model expects {tuple(shape)}")


def reshape_inputs(model, x: torch.Tensor) -> torch.Tensor:
    shape = getattr(model, "input_shape", None)
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        return x.reshape(x.shape[0], *shape)
    return x


@torch.inference_mode()
def num_classes(f, x0: torch.Tensor) -> int:
    """K, the number of logits f returns for one clean input x0 [*input_shape]."""
    out = f(x0.unsqueeze(0))
    if not isinstance(out, torch.Tensor) or out.dim() < 1 or out.shape[0] != 1:
        raise BadInput(f"model must map [B, *shape] to logits [B, K]; got {getattr(out, 'shape', type(out))}")
    k = int(out[0].numel())
    if k < 1:
        raise BadInput("model returns no logits")
    return k
