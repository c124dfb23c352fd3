"""Datasets for `nncert certify`: .npz files with arrays `x` and `y`, or MNIST idx files (optionally gzipped).

MNIST images are returned as float32 in [0, 1] with shape [N, 1, 28, 28]; labels as int64 [N].
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import BadInput



def shared_dir() -> Path | None:
    """../shared of a source checkout, or $NNCERT_SHARED; None when absent."""
    env = os.environ.get("NNCERT_SHARED")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve()
    candidates += [p / "shared" for p in here.parents] + [Path.cwd() / ".." / "shared", Path.cwd() / "shared"]
    for c in candidates:
        if (c / "benchmarks").is_dir() or (c / "datasets").is_dir():
            return c.resolve()
    return None


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file (the MNIST format: magic 0x0000 type ndim, big-endian dims, data)."""
    path = Path(path)
    try:
        with _open(path) as f:
            raw = f.read()
    except FileNotFoundError:
        raise BadInput("file not found", str(path)) from None
    except OSError as e:
        raise BadInput(f"cannot read idx file: {e}", str(path)) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise BadInput("not an idx file (bad magic number)", str(path))
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in dtypes:
        raise BadInput(f"idx data type 0x{raw[2]:02x} is unknown", str(path))
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", ndim, 4).astype(int)
    data = np.frombuffer(raw, dtypes[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise BadInput(f"idx file holds {data.size} values, header says {tuple(dims)}", str(path))
    return data.reshape(dims)


def load_mnist(folder: str | Path | None = None, split: str = "t10k") -> tuple[torch.Tensor, torch.Tensor]:
    """The MNIST images in `folder` (default: shared/datasets/mnist): x [N,1,28,28] float32 in [0,1], y [N]."""
    if folder is None:
        s = shared_dir()
        if s is None:
            raise BadInput("MNIST not found: pass its folder or set NNCERT_SHARED")
        folder = s / "datasets" / "mnist"
    folder = Path(folder)
    imgs = next((folder / f"{split}-images-idx3-ubyte{e}" for e in (".gz", "") if (folder / f"{split}-images-idx3-ubyte{e}").exists()), None)
    labs = next((folder / f"{split}-labels-idx1-ubyte{e}" for e in (".gz", "") if (folder / f"{split}-labels-idx1-ubyte{e}").exists()), None)
    if imgs is None or labs is None:
        raise BadInput(f"no {split}-images-idx3-ubyte / {split}-labels-idx1-ubyte files", str(folder))
    x = torch.from_numpy(read_idx(imgs).astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(read_idx(labs).astype(np.int64))
    return x, y


def mnist_split(n_train: int = 9000, seed: int = 0, folder=None):
    """Split the 10k MNIST test images (the only MNIST we have) into disjoint train / held-out parts.

    Returns (x_train, y_train), (x_test, y_test); the permutation is fixed by `seed`.
    """
    x, y = load_mnist(folder)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    tr, te = perm[:n_train], perm[n_train:]
    return (x[tr], y[tr]), (x[te], y[te])


def load_dataset(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """`x`, `y` from an .npz, from an idx images file (labels beside it), or from a folder of MNIST idx files."""
    path = Path(path)
    if path.is_dir():
        return load_mnist(path)
    if not path.exists():
        raise BadInput("file not found", str(path))
    if path.suffix == ".npz":
        try:
            with np.load(path) as z:
                if "x" not in z or "y" not in z:
                    raise BadInput(f"npz must hold arrays 'x' and 'y' (has {sorted(z.files)})", str(path))
                x, y = z["x"], z["y"]
        except (ValueError, OSError) as e:
            raise BadInput(f"cannot read npz: {e}", str(path)) from None
        if len(x) != len(y):
            raise BadInput(f"x has {len(x)} samples but y has {len(y)}", str(path))
        x = torch.from_numpy(np.asarray(x, dtype=np.float32))
        if not torch.isfinite(x).all():
            raise BadInput("x contains NaN or Inf", str(path))
        return x, torch.from_numpy(np.asarray(y).astype(np.int64))
    if "images-idx3" in path.name:
        x = torch.from_numpy(read_idx(path).astype(np.float32) / 255.0).unsqueeze(1)
        lab = path.with_name(path.name.replace("images-idx3", "labels-idx1"))
        return x, torch.from_numpy(read_idx(lab).astype(np.int64))
    raise BadInput("dataset must be an .npz (x, y), an MNIST idx images file, or a folder of them", str(path))
