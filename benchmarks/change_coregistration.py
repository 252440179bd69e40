"""What co-registration does to `canopy change` on a misregistered pair: a 300 m synthetic forest at 0.5 m with a
0.25 ha harvest, the second date shifted by a known amount; prints a Markdown table of the estimated shift and the
loss and gain found with and without co-registration, and how well the loss matches that of the registered pair.

    python benchmarks/change_coregistration.py
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from forests import synthetic_forest, write_forest  # noqa: E402

SHIFTS = [(0.5, 0.0), (1.3, -0.7), (-2.2, 1.6)]


def iou(result, truth) -> float:
    """The best intersection over union of a loss polygon with the registered pair's loss."""
    return max((g.intersection(truth).area / g.union(truth).area for g in result.loss.geometry), default=0.0)


def main() -> None:
    import canopy

    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        before = synthetic_forest(300.0, res=0.5, seed=2)
        cut = shapely.box(500150, 3999850, 500200, 3999900)
        after = before.copy()
        inside = shapely.contains_xy(cut, *np.meshgrid(after.x, after.y))
        after.values = np.where(inside & np.isfinite(after.values), 0.3, after.values).astype(np.float32)
        first = write_forest(tmp / "before.tif", before)
        truth = canopy.change(first, write_forest(tmp / "aligned.tif", after), min_area_ha=0.01, coregister=False).loss.geometry[0]
        print("| true shift (m) | estimated (m) | loss: polygons / ha, co-registered | raw | gain: polygons / ha, "
              "co-registered | raw | loss IoU with the registered pair's, co-registered | raw |")
        print("| --- " * 8 + "|")
        for dx, dy in SHIFTS:
            second = write_forest(tmp / "after.tif", after.assign_coords(x=after.x + dx, y=after.y + dy).rio.write_transform(None))
            fixed = canopy.change(first, second, min_area_ha=0.01)
            raw = canopy.change(first, second, min_area_ha=0.01, coregister=False)
            cells = [f"{dx:+.1f}, {dy:+.1f}", f"{fixed.shift.dx_m:+.2f}, {fixed.shift.dy_m:+.2f}"]
            for kind in ("loss", "gain"):
                cells += [f"{r.counts[kind][0]} / {r.counts[kind][1]:.3f}" for r in (fixed, raw)]
            cells += [f"{iou(fixed, truth):.2f}", f"{iou(raw, truth):.2f}"]
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
