"""The model registry: one validated record per model, read from ``configs/models/*.yaml``.

Everything the pipeline needs to know about a model (architecture, patch size, normalisation,
ground resolution, head layers, weight sources, licence) lives in these records; nothing about a
model is hard-coded elsewhere.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from canopy.errors import ModelConfigError, UnknownModelError


@dataclass(frozen=True)
class BackboneSpec:
    """Architecture of a DINOv2- or DINOv3-style vision transformer."""

    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int
    img_size: int = 518
    ffn: str = "mlp"
    mlp_ratio: float = 4.0
    num_register_tokens: int = 0
    interpolate_antialias: bool = False
    interpolate_offset: float = 0.1
    interpolate_align_corners: bool = False
    layerscale_init: float = 1.0
    attention: str = "sdpa"
    """``sdpa``: PyTorch's fused kernel (DINOv2's and ``transformers``' arithmetic); ``explicit``:
    ``softmax((q * scale) @ kᵀ) @ v`` step by step, as Meta's canopy-height code computes it."""
    family: str = "dinov2"
    """``dinov2``: learned position embeddings, interpolated to the chip; ``dinov3``: rotary position
    embeddings (RoPE) on the patch tokens' queries and keys, nothing added to the tokens."""
    norm_eps: float = 1e-6
    """LayerNorm epsilon: DINOv2's 1e-6; Meta's DINOv3 code uses 1e-5 (its ``layernormbf16``)."""
    rope_base: float = 100.0
    """DINOv3: the RoPE base the periods are made from when a file does not store them."""
    mask_k_bias: bool = False
    """DINOv3: the attention's ``qkv`` bias is multiplied by a stored ``bias_mask`` (zero for the keys)."""

    def __post_init__(self) -> None:
        if self.family not in ("dinov2", "dinov3"):
            raise ModelConfigError(f"backbone family must be 'dinov2' or 'dinov3', not {self.family!r}.")
        if self.family == "dinov3" and (self.embed_dim // self.num_heads) % 4:
            raise ModelConfigError(f"a DINOv3 backbone's head size {self.embed_dim // self.num_heads} must be a multiple of 4 (RoPE).")
        if self.ffn not in ("mlp", "swiglu"):
            raise ModelConfigError(f"backbone ffn must be 'mlp' or 'swiglu', not {self.ffn!r}.")
        if self.attention not in ("sdpa", "explicit"):
            raise ModelConfigError(f"backbone attention must be 'sdpa' or 'explicit', not {self.attention!r}.")
        if self.embed_dim % self.num_heads:
            raise ModelConfigError(
                f"backbone embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}."
            )
        if self.img_size % self.patch_size:
            raise ModelConfigError(
                f"backbone img_size {self.img_size} is not a multiple of patch_size {self.patch_size}."
            )

    @property
    def grid_size(self) -> int:
        """Side of the token grid the position embeddings were trained for."""
        return self.img_size // self.patch_size


@dataclass(frozen=True)
class HeadSpec:
    """A dense height head and the backbone layers it reads."""

    type: str
    layers: tuple[int, ...]
    features: int = 256
    out_channels: tuple[int, ...] | None = None
    readout: str = "project"
    norm_layers: bool = True
    bins: int = 256
    """Binned heads (``dpt-bins``): number of height bins."""
    bins_range: tuple[float, float] = (0.001, 10.0)
    """Binned heads: the first and last bin centre, before ``bins_scale``."""
    bins_scale: float = 10.0
    """Binned heads: metres per unit of the bin centres."""
    bins_strategy: str = "linear"
    """Binned heads: ``linear`` (Meta v1: linear centres, weights ReLU + 0.1) or ``chmv2_mixlog``
    (Meta v2: centres blended from log to linear spacing, weights ReLU + 1e-8)."""
    unit_bias: bool = False
    """Whether the fusion blocks' residual 3x3 convolutions have a bias (CHMv2's do)."""
    project_after_fusion: bool = True
    """Whether a 3x3 convolution with ReLU (``project``) follows the fusion (CHMv2 has none)."""
    hidden_channels: int = 32
    """Channels of the depth head's last hidden layer (``conv_depth.head.2``): 32, CHMv2 128."""

    def __post_init__(self) -> None:
        if self.bins_strategy not in ("linear", "chmv2_mixlog"):
            raise ModelConfigError(f"head bins_strategy must be 'linear' or 'chmv2_mixlog', not {self.bins_strategy!r}.")
        if not 0 < self.bins_range[0] < self.bins_range[1]:
            raise ModelConfigError(f"head bins_range must be two increasing positive numbers, not {list(self.bins_range)}.")
        if self.type not in ("dpt", "linear", "dpt-bins"):
            raise ModelConfigError(f"head type must be 'dpt', 'dpt-bins' or 'linear', not {self.type!r}.")
        if self.type in ("dpt", "dpt-bins") and len(self.layers) != 4:
            raise ModelConfigError(f"a DPT head reads exactly 4 layers, got {list(self.layers)}.")
        if self.readout not in ("project", "add", "ignore"):
            raise ModelConfigError(f"head readout must be project, add or ignore, not {self.readout!r}.")


@dataclass(frozen=True)
class Normalization:
    """Per-band mean and standard deviation applied to RGB scaled to [0, 1]."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ModelConfigError("normalization needs three means and three positive stds.")


@dataclass(frozen=True)
class WeightSource:
    """Where a checkpoint is published, and its SHA-256 when the publisher gives one."""

    url: str
    sha256: str | None = None
    token_env: str | None = None
    """An environment variable whose value, when set, is sent as a bearer token (``HF_TOKEN`` for gated Hub files)."""

    @property
    def filename(self) -> str:
        """The file name the URL ends with, used as the name in the cache."""
        return Path(urlparse(self.url).path).name


@dataclass(frozen=True)
class ModelSpec:
    """Everything canopy knows about one model."""

    name: str
    description: str
    licence: str
    backbone: BackboneSpec
    head: HeadSpec
    normalization: Normalization
    ground_resolution: float
    chip_size: int = 224
    weights: tuple[WeightSource, ...] = ()
    head_in_checkpoint: bool = False
    resolution_range: tuple[float, float] | None = None
    backbone_model: str | None = None
    meta_files: tuple[str, ...] = ()
    """Name patterns of the files Meta publishes for this model when they are more than the one
    downloaded: the head's first, then the backbone's, found side by side in a folder or the cache."""
    obtain: str | None = None
    """How a user obtains gated weights, said in every error about missing weights."""
    source_file: Path | None = field(default=None, compare=False)

    @property
    def backbone_name(self) -> str:
        """Registry name of the backbone: ``backbone_model`` for trained models, else the model's own name."""
        return self.backbone_model or self.name

    def __post_init__(self) -> None:
        if self.ground_resolution <= 0:
            raise ModelConfigError(f"model {self.name}: ground_resolution must be positive.")
        if self.chip_size <= 0 or self.chip_size % self.backbone.patch_size:
            raise ModelConfigError(
                f"model {self.name}: chip_size {self.chip_size} is not a multiple of the patch size {self.backbone.patch_size}."
            )
        if len(self.meta_files) not in (0, 2):
            raise ModelConfigError(f"model {self.name}: meta_files lists the head's file pattern, then the backbone's.")
        bad = [i for i in self.head.layers if not 0 <= i < self.backbone.depth]
        if bad:
            raise ModelConfigError(
                f"model {self.name}: head layers {bad} are outside the backbone's 0..{self.backbone.depth - 1}."
            )


def _build(cls: type, data: Any, where: str) -> Any:
    """Build a frozen dataclass from a YAML mapping, refusing unknown or missing keys."""
    if not isinstance(data, dict):
        raise ModelConfigError(f"{where}: expected a mapping, got {type(data).__name__}.")
    names = {f.name for f in dataclasses.fields(cls) if f.init and f.name != "source_file"}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ModelConfigError(f"{where}: unknown keys {unknown}; allowed are {sorted(names)}.")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ModelConfigError(f"{where}: {exc}.") from None


def parse_model(data: dict[str, Any], source_file: Path | None = None) -> ModelSpec:
    """Validate one model record from the registry.

    Parameters
    ----------
    data
        The record as loaded from YAML.
    source_file
        The file it came from, for messages.

    Returns
    -------
    ModelSpec

    Raises
    ------
    ModelConfigError
        If a key is unknown or missing, or a value is out of range.
    """
    where = f"{source_file or 'model record'}: {data.get('name', '?')}"
    if not isinstance(data, dict):
        raise ModelConfigError(f"{where}: a model record must be a mapping.")
    record = dict(data)
    try:
        record["backbone"] = _build(BackboneSpec, record["backbone"], f"{where}.backbone")
        record["head"] = _build(HeadSpec, record["head"], f"{where}.head")
        record["normalization"] = _build(Normalization, record["normalization"], f"{where}.normalization")
        record["weights"] = [_build(WeightSource, w, f"{where}.weights") for w in record.get("weights") or []]
    except KeyError as exc:
        raise ModelConfigError(f"{where}: missing key {exc.args[0]!r}.") from None
    spec = _build(ModelSpec, record, where)
    return dataclasses.replace(spec, source_file=source_file)


def config_dir() -> Path:
    """The directory holding the registry's YAML files.

    An installed wheel carries them as ``canopy/configs``; a source checkout keeps them in the
    repository's top-level ``configs/``.
    """
    packaged = Path(__file__).resolve().parents[1] / "configs"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "configs"


@functools.cache
def _registry() -> dict[str, ModelSpec]:
    """Load every model record once per process."""
    models: dict[str, ModelSpec] = {}
    for path in sorted((config_dir() / "models").glob("*.yaml")):
        content = yaml.safe_load(path.read_text()) or {}
        for record in content.get("models", []):
            spec = parse_model(record, path)
            if spec.name in models:
                raise ModelConfigError(f"{path}: model {spec.name} is also defined in {models[spec.name].source_file}.")
            models[spec.name] = spec
    return models


def list_models() -> list[ModelSpec]:
    """Every model in the registry, in name order.

    Returns
    -------
    list of ModelSpec
    """
    return [spec for _, spec in sorted(_registry().items())]


def get_model_spec(name: str) -> ModelSpec:
    """The registry record of a model.

    Parameters
    ----------
    name
        A registry name such as ``dinov2_vits14``.

    Returns
    -------
    ModelSpec

    Raises
    ------
    UnknownModelError
        If no model has that name; the message lists the known ones.
    """
    models = _registry()
    if name not in models:
        raise UnknownModelError(
            f"Unknown model {name!r}; choose one of {', '.join(sorted(models))} (see `canopy models`)."
        )
    return models[name]
