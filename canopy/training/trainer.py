"""``canopy.train``: fit a height head on lidar canopy height, with the backbone frozen."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from canopy.errors import OutputPathError, TrainingError, UntrainedHeadWarning
from canopy.models.heads import build_head
from canopy.models.height_model import load_height_model
from canopy.models.model_file import save_model_file
from canopy.models.registry import get_model_spec
from canopy.models.weights import ProgressCallback
from canopy.runtime.device import select_device
from canopy.training.samples import Sample, build_samples

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochReport:
    """One epoch: mean training loss (L1, m) and validation MAE (m, None without validation)."""

    epoch: int
    epochs: int
    train_loss: float
    val_mae: float | None


def _augment(sample: Sample, k: int, flip: bool) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """Rotate by k quarter turns and optionally mirror both the feature maps and the target.

    Features are cached once, so augmentation acts on the token grid; flips and quarter turns map
    the grid onto itself exactly.
    """
    layers = []
    for patches, cls in sample.features:
        p = torch.rot90(patches, k, dims=(-2, -1))
        layers.append((p.flip(-1) if flip else p, cls))
    target = torch.rot90(sample.target, k, dims=(-2, -1))
    return layers, target.flip(-1) if flip else target


def _batch(items: list[tuple[list, torch.Tensor]]) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """Stack per-sample layers and targets into batches."""
    n_layers = len(items[0][0])
    layers = [
        (torch.stack([it[0][i][0] for it in items]), torch.stack([it[0][i][1] for it in items])) for i in range(n_layers)
    ]
    return layers, torch.stack([it[1] for it in items])


def _predict_on_reference_grid(head: torch.nn.Module, layers, target_shape: tuple[int, int], factor: int) -> torch.Tensor:
    """Run the head and average its output over factor x factor pixels: heights on the reference's grid."""
    size = (target_shape[0] * factor, target_shape[1] * factor)
    heights = head(layers, size)
    return F.avg_pool2d(heights, factor)[:, 0] if factor > 1 else heights[:, 0]


def _l1(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean absolute error over the target's valid pixels, and how many there were."""
    valid = torch.isfinite(target)
    n = int(valid.sum())
    if n == 0:
        return pred.sum() * 0.0, 0
    return (pred[valid] - target[valid]).abs().mean(), n


def _evaluate(head: torch.nn.Module, samples: list[Sample], batch_size: int) -> dict:
    """MAE, RMSE and bias of the head over samples, on the reference grid."""
    head.eval()
    abs_sum = sq_sum = d_sum = 0.0
    n = 0
    with torch.no_grad():
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            layers, target = _batch([(s.features, s.target) for s in chunk])
            pred = _predict_on_reference_grid(head, layers, tuple(target.shape[-2:]), chunk[0].factor)
            valid = torch.isfinite(target)
            d = (pred[valid] - target[valid]).double()
            abs_sum += float(d.abs().sum())
            sq_sum += float((d * d).sum())
            d_sum += float(d.sum())
            n += int(valid.sum())
    return {"mae": abs_sum / n, "rmse": math.sqrt(sq_sum / n), "bias": d_sum / n, "n": n}


def split_by_image(names: Sequence[str], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of training and validation images: whole images are held out, never parts of one.

    Raises
    ------
    TrainingError
        If validation is asked for with fewer than two images, or the fraction is outside [0, 1).
    """
    if not 0 <= val_fraction < 1:
        raise TrainingError(f"--val-fraction must be at least 0 and below 1, got {val_fraction}.")
    count = len(names)
    n_val = 0 if val_fraction == 0 else max(1, round(val_fraction * count))
    if n_val and count < 2:
        raise TrainingError("Validation holds out whole images, so it needs at least two; add imagery or pass --val-fraction 0.")
    order = np.random.default_rng(seed).permutation(count)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


def train(
    imagery: Sequence[str | os.PathLike],
    references: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    backbone: str = "dinov2_vits14",
    weights: str | os.PathLike | None = None,
    head: str = "dpt",
    epochs: int = 30,
    val_fraction: float = 0.2,
    seed: int = 0,
    chip_size: int | None = None,
    batch_size: int = 4,
    learning_rate: float = 3e-4,
    device: str = "auto",
    offline: bool | None = None,
    progress: Callable[[EpochReport], None] | None = None,
    download_progress: ProgressCallback | None = None,
) -> dict:
    """Train a height head on imagery paired with reference canopy height, the backbone frozen.

    Backbone features of every chip are computed once; each epoch then trains the head on them
    with random flips and quarter turns. Whole images are held out for validation and the epoch
    with the lowest validation MAE is kept (the last epoch without validation). The L1 loss is
    computed on the reference's grid.

    Parameters
    ----------
    imagery, references
        Paired lists: the i-th reference is canopy height (m) over the i-th RGB GeoTIFF.
    out
        The model file to write (``.safetensors``), usable as ``canopy predict --model``.
    backbone
        Registry name of the DINOv2 backbone.
    weights
        Backbone weights, resolved as for ``predict`` (``random`` for tests).
    head
        ``dpt`` or ``linear``.
    epochs, val_fraction, seed, batch_size, learning_rate
        Training settings; ``seed`` fixes the split, initialisation and augmentation.
    chip_size
        Chip side in model pixels; default the backbone's chip size.
    device
        ``auto``, ``cpu``, ``cuda`` or ``mps``.
    offline
        Forbid weight downloads.
    progress
        Called after each epoch with an :class:`EpochReport`.
    download_progress
        Called while backbone weights download.

    Returns
    -------
    dict
        The training summary and validation metrics stored in the file.

    Raises
    ------
    TrainingError
        If the lists are unpaired or empty, an image has no valid reference, or validation cannot be held out.
    OutputPathError
        If ``out``'s directory does not exist.
    """
    if len(imagery) != len(references) or not imagery:
        raise TrainingError(
            f"Got {len(imagery)} imagery file(s) and {len(references)} reference(s); pass one --reference per --imagery, in the same order."
        )
    if epochs < 1:
        raise TrainingError(f"--epochs must be at least 1, got {epochs}.")
    out = Path(out)
    if not out.parent.is_dir():
        raise OutputPathError(f"Output directory {out.parent} does not exist; create it first.")
    base = get_model_spec(backbone)
    spec = dataclasses.replace(base, head=dataclasses.replace(base.head, type=head), chip_size=chip_size or base.chip_size)
    torch_device = select_device(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedHeadWarning)  # this is the head about to be trained
        loaded = load_height_model(backbone, weights, offline=offline, progress=download_progress)
    model = loaded.model
    model.spec = spec
    torch.manual_seed(seed)
    model.head = build_head(spec.head, model.backbone.embed_dim)
    model.to(torch_device)

    names = [Path(p).name for p in imagery]
    train_idx, val_idx = split_by_image(names, val_fraction, seed)
    per_image = []
    for image, ref in zip(imagery, references):
        per_image.append(build_samples(model, image, ref, spec.chip_size, torch_device))
        log.info("features for %s: %d chips", Path(image).name, len(per_image[-1]))
    train_samples = [s for i in train_idx for s in per_image[i]]
    val_samples = [s for i in val_idx for s in per_image[i]]

    head_module = model.head.cpu()
    train_targets = torch.cat([s.target[torch.isfinite(s.target)] for s in train_samples])
    head_module.set_output_bias(float(train_targets.mean()))
    optimiser = torch.optim.AdamW(head_module.parameters(), lr=learning_rate, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    best_state, best_mae, best_epoch, history = None, math.inf, epochs, []
    for epoch in range(1, epochs + 1):
        head_module.train()
        order = rng.permutation(len(train_samples))
        losses = []
        for start in range(0, len(order), batch_size):
            chunk = [train_samples[i] for i in order[start : start + batch_size]]
            items = [_augment(s, int(rng.integers(4)), bool(rng.integers(2))) for s in chunk]
            layers, target = _batch(items)
            pred = _predict_on_reference_grid(head_module, layers, tuple(target.shape[-2:]), chunk[0].factor)
            loss, n = _l1(pred, target)
            if n == 0:
                continue
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head_module.parameters(), 1.0)  # a DPT head on few chips diverges without it
            optimiser.step()
            losses.append(loss.item())
        train_loss = float(np.mean(losses)) if losses else math.nan
        val_mae = _evaluate(head_module, val_samples, batch_size)["mae"] if val_samples else None
        history.append({"epoch": epoch, "train_loss": train_loss, "val_mae": val_mae})
        if progress is not None:
            progress(EpochReport(epoch, epochs, train_loss, val_mae))
        if val_mae is not None and val_mae < best_mae:
            best_mae, best_epoch, best_state = val_mae, epoch, copy.deepcopy(head_module.state_dict())
    if best_state is not None:
        head_module.load_state_dict(best_state)
    validation = _evaluate(head_module, val_samples, batch_size) if val_samples else {}
    training = {
        "train_images": [names[i] for i in train_idx],
        "val_images": [names[i] for i in val_idx],
        "train_pixels": int(train_targets.numel()),
        "train_mean_height": float(train_targets.mean()),
        "chips": len(train_samples) + len(val_samples),
        "epochs": epochs,
        "best_epoch": best_epoch,
        "seed": seed,
        "head": head,
        "chip_size": spec.chip_size,
        "learning_rate": learning_rate,
        "history": history,
    }
    save_model_file(out, spec, loaded.backbone_weights, head_module, training, validation)
    return {"training": training, "validation": validation, "backbone_weights": loaded.backbone_weights}
