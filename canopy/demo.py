"""The demo: the whole job on bundled NEON plots, offline, in a few minutes on a laptop CPU."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rasterio.warp import transform_bounds

from canopy.errors import CanopyError
from canopy.models.registry import get_model_spec
from canopy.models.weights import find_cached

log = logging.getLogger(__name__)

DATA = Path(__file__).resolve().parent / "data" / "neon"
DEMO_PLOTS = ("TEAK_049", "OSBS_003")
DEMO_BACKBONE = "dinov2_vits14"


@dataclass(frozen=True)
class DemoResult:
    """What the demo wrote, and whether its backbone was pretrained."""

    out_dir: Path
    maps: list[Path]
    pretrained: bool
    notice: str


def plot_bbox(name: str) -> tuple[float, float, float, float]:
    """A bundled plot's extent in EPSG:4326 (minlon, minlat, maxlon, maxlat)."""
    import rasterio

    with rasterio.open(DATA / f"{name}_rgb.tif") as src:
        return transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)


def backbone_notice(backbone: str) -> tuple[bool, str]:
    """Whether pretrained weights for ``backbone`` are cached, and the sentence that says what is used."""
    if find_cached(get_model_spec(backbone)) is not None:
        return True, f"Using the pretrained {backbone} backbone from the weights cache."
    return False, (
        f"NO PRETRAINED WEIGHTS: {backbone} is not in the weights cache and the demo runs offline, so it uses a "
        "seeded RANDOM backbone; the maps show that the pipeline works, not how accurate canopy is. "
        f"Place the checkpoint in the cache (see `canopy models`) and rerun for real results."
    )


def run_demo(out_dir: Path, *, say: Callable[[str], None] = log.info) -> DemoResult:
    """Predict canopy height over bundled NEON plots with the real pipeline.

    Parameters
    ----------
    out_dir
        Where the maps (COG, ``.qml`` style and quicklook PNG per plot) go; created if missing.
    say
        Receives one line per step, for the CLI to print.

    Returns
    -------
    DemoResult

    Raises
    ------
    CanopyError
        If a step fails.
    """
    from canopy.prediction import predict

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pretrained, notice = backbone_notice(DEMO_BACKBONE)
    say(notice)
    weights = None if pretrained else "random"
    maps = []
    for plot in DEMO_PLOTS:
        target = out_dir / f"{plot}_height.tif"
        bbox = plot_bbox(plot)
        say(f"predicting {plot} over bbox {','.join(f'{v:.6f}' for v in bbox)} (EPSG:4326) -> {target}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            predict(DATA / f"{plot}_rgb.tif", bbox, model=DEMO_BACKBONE, weights=weights, out=target,
                    res=0.2, quicklook=True, offline=True)
        maps.append(target)
    if not maps:
        raise CanopyError("The demo found no bundled plots to predict.")
    return DemoResult(out_dir, maps, pretrained, notice)
