"""A backbone and a height head behind the model's own input normalisation."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from canopy.errors import ModelFileError, UntrainedHeadWarning, WeightsMismatchError, warn
from canopy.models.backbone import build_backbone
from canopy.models.heads import build_head
from canopy.models.model_file import ModelFile, looks_like_model_file, read_model_file
from canopy.models.registry import ModelSpec, get_model_spec
from canopy.models.vision_transformer import VisionTransformer, build_vision_transformer
from canopy.models.checkpoint import built_empty, dequantize, is_dynamically_quantized, load_into, read_checkpoint, split_model_checkpoint
from canopy.models.dinov3_checkpoint import chmv2_head_to_meta_layout
from canopy.models.convert import converted_from
from canopy.models.weights import ProgressCallback, ResolvedWeights, parse_random, resolve_weights

log = logging.getLogger(__name__)


class HeightModel(nn.Module):
    """Frozen backbone plus height head: RGB in [0, 1] in, metres out.

    Parameters
    ----------
    spec
        The model record: normalisation, head type and the backbone layers the head reads.
    backbone
        The (frozen) backbone.
    head
        The height head; built from ``spec.head`` when omitted.
    """

    def __init__(self, spec: ModelSpec, backbone: VisionTransformer, head: nn.Module | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = backbone.requires_grad_(False).eval()
        self.head = head if head is not None else build_head(spec.head, backbone.embed_dim)
        norm = spec.normalization
        self.register_buffer("mean", torch.tensor(norm.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(norm.std).view(1, 3, 1, 1), persistent=False)

    def set_input_affine(self, gain, offset) -> None:
        """Fold a per-band stretch ``rgb' = gain * rgb + offset`` into the input normalisation.

        ``(gain * x + offset - mean) / std`` equals ``(x - (mean - offset) / gain) / (std / gain)``,
        so the model's own mean and std absorb it and nothing else in the pipeline changes.
        """
        gain = torch.as_tensor(gain, dtype=torch.float32).view(1, 3, 1, 1)
        offset = torch.as_tensor(offset, dtype=torch.float32).view(1, 3, 1, 1)
        self.mean = (self.mean - offset) / gain
        self.std = self.std / gain

    @property
    def patch_size(self) -> int:
        """Chip sides must be multiples of this."""
        return self.backbone.patch_size

    def init_head_random(self, seed: int = 0) -> None:
        """Re-initialise the head's parameters from a fixed seed (tests and benchmarks)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for module in self.head.modules():
                if hasattr(module, "reset_parameters") and module is not self.head:
                    module.reset_parameters()

    def features(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Normalise RGB in [0, 1] and return the head's input: (patch map, class token) per layer."""
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return list(
            self.backbone.get_intermediate_layers(
                x, n=list(self.spec.head.layers), reshape=True, return_class_token=True, norm=self.spec.head.norm_layers
            )
        )

    def forward(self, x: torch.Tensor, moments: bool = False) -> torch.Tensor:
        """Height in metres (B, 1, H, W) for RGB images (B, 3, H, W) scaled to [0, 1]; with ``moments``, (B, 2, H, W):
        the height and the variance (m²) of the head's predicted height distribution (zero for regression heads).

        Raises
        ------
        PatchSizeError
            If H or W is not a multiple of the patch size.
        """
        return self.head(self.features(x), tuple(x.shape[-2:]), moments)


def is_quantized(model: nn.Module) -> bool:
    """Whether a model holds int8 dynamically quantised layers (a compressed checkpoint loaded on the CPU)."""
    return any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules())


@dataclass(frozen=True)
class LoadedModel:
    """A ready height model and the identities of its weights, for output tags."""

    model: HeightModel
    spec: ModelSpec
    backbone_weights: str
    head_weights: str


@dataclass(frozen=True)
class ModelRef:
    """A model resolved once: its spec, the trained model file it comes from (if any), and the weights named.

    Plain and picklable, so a run can be shipped to other processes and load the same model there.
    ``weights`` is a path, ``random``/``random(seed=N)``, or None for the cache or a download. A
    model file is read once, here, and kept (``trained``) for loading in this process; pickled, the
    reference keeps only the file's SHA-256, and another process reads the file once and checks it.
    """

    spec: ModelSpec
    weights: str | None = None
    file: str | None = None
    file_sha256: str | None = None
    trained: ModelFile | None = field(default=None, compare=False, repr=False)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "trained"}

    @property
    def key(self) -> tuple:
        """What tells loaded models apart (a process keeps one loaded per key)."""
        return (self.spec, self.weights, self.file, self.file_sha256)

    @classmethod
    def resolve(cls, model: str | os.PathLike | ModelRef, weights: str | os.PathLike | None = None) -> ModelRef:
        """The model a registry name or a ``canopy train`` model file stands for.

        Raises
        ------
        UnknownModelError, ModelFileError
            If the name is neither.
        """
        if isinstance(model, ModelRef):
            return model if weights is None else replace(model, weights=str(weights))
        weights = None if weights is None else str(weights)
        if looks_like_model_file(model):
            trained = read_model_file(Path(model).expanduser().resolve())
            return cls(trained.spec, weights, str(trained.path), trained.sha256, trained)
        return cls(get_model_spec(str(model)), weights)

    @property
    def name(self) -> str:
        """What the user named: the model file's path, or the registry name."""
        return self.file or self.spec.name


def load_height_model(
    ref: ModelRef,
    *,
    offline: bool | None = None,
    progress: ProgressCallback | None = None,
    device: torch.device | None = None,
) -> LoadedModel:
    """Load a model as backbone plus height head.

    Parameters
    ----------
    ref
        The resolved model: a registry model (a DINOv2 backbone's name means that backbone with its
        DPT head, whose weights are seeded-random and warn), or a model file from ``canopy train``,
        with the backbone weights to use (for a model file trained on a random backbone, None means
        that same backbone).
    offline
        Forbid downloads; None reads ``CANOPY_OFFLINE``.
    progress
        Download progress callback.
    device
        Where the model will run; decides how int8 quantised checkpoints are loaded (None: CPU).

    Returns
    -------
    LoadedModel

    Raises
    ------
    WeightsNotFoundError, OfflineError, DownloadError, WeightsMismatchError
        As :func:`canopy.models.load_backbone`.
    ModelFileError
        If a model file is damaged, or the backbone weights are not the ones it was trained with.
    """
    if ref.file is not None:
        return _load_model_file(ref, offline, progress)
    spec = ref.spec
    resolved = resolve_weights(spec, ref.weights, offline=offline, progress=progress)
    if spec.head_in_checkpoint and not resolved.is_random:
        return _load_whole_checkpoint(spec, resolved, device)
    model = HeightModel(spec, build_backbone(spec, resolved))
    seed = resolved.seed or 0
    model.init_head_random(seed)
    if not resolved.is_random and not spec.head_in_checkpoint:
        warn(
            f"The height head of {spec.name} has no trained weights (random(seed={seed})): its heights mean nothing; "
            "train one on lidar with `canopy train` and pass the file as --model.",
            UntrainedHeadWarning,
        )
    return LoadedModel(model.eval(), spec, resolved.identity, f"random(seed={seed})")


def _load_whole_checkpoint(spec: ModelSpec, resolved: ResolvedWeights, device: torch.device | None) -> LoadedModel:
    """A published model's backbone and head, loaded strictly into both: from one checkpoint holding
    both (Meta v1, Hugging Face), or from Meta's head file and the backbone file beside it (CHMv2).

    A dynamically quantised (int8, "compressed") checkpoint runs as quantised modules on the CPU,
    exactly as published; on other devices, where PyTorch has no quantised kernels, its weights
    are dequantised to float.
    """
    if resolved.backbone_path is not None:
        raw = head_raw = read_checkpoint(resolved.path)
        backbone_raw = read_checkpoint(resolved.backbone_path)
    else:
        raw = read_checkpoint(resolved.path)
        backbone_raw, head_raw = split_model_checkpoint(raw, str(resolved.path))
    if is_dynamically_quantized(raw) and (device is None or device.type == "cpu"):
        model = HeightModel(spec, build_vision_transformer(spec.backbone))
        model = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
        state = {**{f"backbone.{k}": v for k, v in backbone_raw.items()}, **{f"head.{k}": v for k, v in head_raw.items()}}
        own = model.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise WeightsMismatchError(
                f"Quantised weights from {resolved.path} do not fit {spec.name}: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}; pass the checkpoint published for this model."
            )
        state = OrderedDict(state)
        state._metadata = own._metadata  # serialisation versions of the quantised modules, which the file's dict lost
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise WeightsMismatchError(
                f"Quantised weights from {resolved.path} do not fit {spec.name} ({str(exc).splitlines()[-1].strip()})."
            ) from None
        log.info("loaded %s as int8 dynamically quantised modules", spec.name)
    else:
        backbone = build_backbone(spec, resolved, dequantize(backbone_raw))
        model = HeightModel(spec, backbone, built_empty(lambda: build_head(spec.head, backbone.embed_dim)))
        head_state = chmv2_head_to_meta_layout(dequantize(head_raw))
        load_into(model.head, head_state, expected=f"{spec.name} head ({spec.head.type})", source=str(resolved.path))
    identity = resolved.identity
    original = converted_from(resolved.path)
    if original is not None:
        identity = f"{identity} (float conversion of int8 file {original})"
    return LoadedModel(model.eval(), spec, resolved.backbone_sha256 or identity, identity)


def _load_model_file(ref: ModelRef, offline, progress) -> LoadedModel:
    """A trained model file with the backbone weights it was trained on, and nothing else; the file read once per process."""
    trained = ref.trained or read_model_file(ref.file)
    path, spec, weights = trained.path, trained.spec, ref.weights
    if ref.file_sha256 is not None and trained.sha256 != ref.file_sha256:
        raise ModelFileError(f"Model file {path} changed since the run was planned; run it again.")
    if weights is None and parse_random(trained.backbone_weights) is not None:
        weights = trained.backbone_weights
    resolved = resolve_weights(get_model_spec(spec.backbone_name), weights, offline=offline, progress=progress)
    if resolved.identity != trained.backbone_weights:
        raise ModelFileError(
            f"Model file {path.name} was trained on {spec.backbone_name} weights {trained.backbone_weights[:16]}, "
            f"not on the ones given ({resolved.identity[:16]}); pass --weights with the backbone it was trained with."
        )
    backbone = build_backbone(spec, resolved)
    model = HeightModel(spec, backbone, built_empty(lambda: build_head(spec.head, backbone.embed_dim)))
    try:
        model.head.load_state_dict(trained.head_state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelFileError(f"Model file {path.name} holds a head that does not fit its own record ({first}).") from None
    return LoadedModel(model.eval(), spec, resolved.identity, trained.sha256)
