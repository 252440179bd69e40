"""``canopy.train``: fit a height head on lidar canopy height, with the backbone frozen."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from canopy.errors import OutputPathError, TrainingError
from canopy.models.backbone import build_backbone
from canopy.models.heads import build_head
from canopy.models.height_model import HeightModel
from canopy.models.model_file import save_model_file
from canopy.models.registry import get_model_spec
from canopy.models.weights import ProgressCallback, resolve_weights
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


@dataclass(frozen=True)
class TrainSettings:
    """How a head is trained: its type, epochs, the share of whole images held out, seed, chip side, batch and learning rate.

    ``seed`` fixes the split, the head's initialisation and the augmentation; ``chip_size`` None
    takes the backbone's.

    Raises
    ------
    TrainingError
        If a value is out of range.
    """

    head: str = "dpt"
    epochs: int = 30
    val_fraction: float = 0.2
    seed: int = 0
    chip_size: int | None = None
    batch_size: int = 4
    learning_rate: float = 3e-4

    def __post_init__(self) -> None:
        if self.head not in ("dpt", "linear"):
            raise TrainingError(f"--head {self.head!r} is not one of dpt, linear.")
        if self.epochs < 1:
            raise TrainingError(f"--epochs must be at least 1, got {self.epochs}.")
        if not 0 <= self.val_fraction < 1:
            raise TrainingError(f"--val-fraction must be at least 0 and below 1, got {self.val_fraction}.")
        if self.batch_size < 1 or not self.learning_rate > 0:
            raise TrainingError("--batch-size must be at least 1 and the learning rate positive.")


@dataclass(frozen=True)
class Metrics:
    """Errors of predicted against reference height on the reference's grid: MAE, RMSE, bias (m) over ``n`` pixels."""

    mae: float
    rmse: float
    bias: float
    n: int


@dataclass(frozen=True)
class TrainResult:
    """What ``canopy.train`` did: the model file written, the backbone weights it is tied to, and how training went.

    ``validation`` is None when no image was held out; ``history`` has one report per epoch and
    ``best_epoch`` is the one kept.
    """

    path: Path
    backbone_weights: str
    train_images: tuple[str, ...]
    val_images: tuple[str, ...]
    train_pixels: int
    train_mean_height: float
    chips: int
    best_epoch: int
    history: tuple[EpochReport, ...]
    validation: Metrics | None

    def to_dict(self) -> dict:
        """Plain values for JSON (the path as text, tuples as lists).

        .. versionadded:: 0.3
        """
        return {**dataclasses.asdict(self), "path": str(self.path), "train_images": list(self.train_images),
                "val_images": list(self.val_images), "history": [dataclasses.asdict(r) for r in self.history]}


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


def _evaluate(head: torch.nn.Module, samples: list[Sample], batch_size: int) -> Metrics:
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
    return Metrics(abs_sum / n, math.sqrt(sq_sum / n), d_sum / n, n)


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
    settings: TrainSettings = TrainSettings(),
    device: str = "auto",
    offline: bool | None = None,
    progress: Callable[[EpochReport], None] | None = None,
    download_progress: ProgressCallback | None = None,
) -> TrainResult:
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
        Registry name of the DINOv2 or DINOv3 backbone.
    weights
        Backbone weights, resolved as for ``predict`` (``random`` for tests).
    settings
        Head type, epochs, validation share, seed, chip size, batch size and learning rate.
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
    TrainResult
        What was written and how training went (also stored in the file).

    Raises
    ------
    TrainingError
        If the lists are unpaired or empty, a local file does not exist, an image has no valid reference, or validation cannot be held out.
    OutputPathError
        If ``out``'s directory does not exist.
    """
    if len(imagery) != len(references) or not imagery:
        raise TrainingError(
            f"Got {len(imagery)} imagery file(s) and {len(references)} reference(s); pass one --reference per --imagery, in the same order."
        )
    missing = [str(p) for p in (*imagery, *references) if "://" not in str(p) and not Path(p).is_file()]
    if missing:
        raise TrainingError(f"Training input {missing[0]} does not exist; check the --imagery and --reference paths.")
    out = Path(out)
    if not out.parent.is_dir():
        raise OutputPathError(f"Output directory {out.parent} does not exist; create it first.")
    base = get_model_spec(backbone)
    spec = dataclasses.replace(base, head=dataclasses.replace(base.head, type=settings.head), chip_size=settings.chip_size or base.chip_size)
    torch_device = select_device(device)
    resolved = resolve_weights(base, weights, offline=offline, progress=download_progress)
    frozen = build_backbone(base, resolved)
    torch.manual_seed(settings.seed)
    model = HeightModel(spec, frozen, build_head(spec.head, frozen.embed_dim)).to(torch_device)

    names = [Path(p).name for p in imagery]
    train_idx, val_idx = split_by_image(names, settings.val_fraction, settings.seed)
    per_image = []
    for image, ref in zip(imagery, references):
        per_image.append(build_samples(model, image, ref, spec.chip_size, torch_device))
        log.info("features for %s: %d chips", Path(image).name, len(per_image[-1]))
    train_samples = [s for i in train_idx for s in per_image[i]]
    val_samples = [s for i in val_idx for s in per_image[i]]

    head_module = model.head.cpu()
    train_targets = torch.cat([s.target[torch.isfinite(s.target)] for s in train_samples])
    head_module.set_output_bias(float(train_targets.mean()))
    history, best_epoch = _fit(head_module, train_samples, val_samples, settings, progress)
    validation = _evaluate(head_module, val_samples, settings.batch_size) if val_samples else None
    result = TrainResult(
        out, resolved.identity, tuple(names[i] for i in train_idx), tuple(names[i] for i in val_idx),
        int(train_targets.numel()), float(train_targets.mean()), len(train_samples) + len(val_samples), best_epoch,
        tuple(history), validation,
    )
    record = result.to_dict()
    training = {key: record[key] for key in ("train_images", "val_images", "train_pixels", "train_mean_height", "chips",
                                             "best_epoch", "history")}
    training.update(epochs=settings.epochs, seed=settings.seed, head=settings.head, chip_size=spec.chip_size,
                    learning_rate=settings.learning_rate)
    save_model_file(out, spec, resolved.identity, head_module, training, record["validation"] or {})
    return result


def _fit(head: torch.nn.Module, train_samples: list[Sample], val_samples: list[Sample], settings: TrainSettings,
         progress: Callable[[EpochReport], None] | None) -> tuple[list[EpochReport], int]:
    """Train ``head`` for the settings' epochs, keep the epoch of lowest validation MAE; return the reports and that epoch."""
    optimiser = torch.optim.AdamW(head.parameters(), lr=settings.learning_rate, weight_decay=1e-4)
    rng = np.random.default_rng(settings.seed)
    epochs, batch_size = settings.epochs, settings.batch_size
    best_state, best_mae, best_epoch, history = None, math.inf, epochs, []
    for epoch in range(1, epochs + 1):
        head.train()
        order = rng.permutation(len(train_samples))
        losses = []
        for start in range(0, len(order), batch_size):
            chunk = [train_samples[i] for i in order[start : start + batch_size]]
            items = [_augment(s, int(rng.integers(4)), bool(rng.integers(2))) for s in chunk]
            layers, target = _batch(items)
            pred = _predict_on_reference_grid(head, layers, tuple(target.shape[-2:]), chunk[0].factor)
            loss, n = _l1(pred, target)
            if n == 0:
                continue
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)  # a DPT head on few chips diverges without it
            optimiser.step()
            losses.append(loss.item())
        train_loss = float(np.mean(losses)) if losses else math.nan
        val_mae = _evaluate(head, val_samples, batch_size).mae if val_samples else None
        report = EpochReport(epoch, epochs, train_loss, val_mae)
        history.append(report)
        if progress is not None:
            progress(report)
        if val_mae is not None and val_mae < best_mae:
            best_mae, best_epoch, best_state = val_mae, epoch, copy.deepcopy(head.state_dict())
    if best_state is not None:
        head.load_state_dict(best_state)
    return history, best_epoch
