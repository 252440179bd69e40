"""Allometry: a tree's stem diameter, aboveground biomass and carbon from its height and crown diameter, with their
uncertainty.

**Equations** (H in m, CD in m, DBH in cm, AGB in kg, ρ in g/cm³):

- Jucker et al. 2017 (Global Change Biology 23: 177-190), fitted on 108,753 trees worldwide, from H × CD:

  - stem diameter: ``DBH = a (H CD)^b exp(σ²/2)``; global ``a = 0.557``, ``b = 0.809``, ``σ = 0.056``, and one
    ``(a, b)`` for each biogeographic region, biome and clade;
  - aboveground biomass directly: ``AGB = a (H CD)^b exp(σ²/2)``, gymnosperms ``a = 0.109``, ``b = 1.790``;
    angiosperms ``a = 0.016``, ``b = 2.013``; ``σ = 0.204``.

  The coefficients are those the R package itcSegment (Dalponte, ``dbh()`` and ``agb()``) applies, which is also
  the cross-check. ``exp(σ²/2)`` is the log-normal bias correction (Baskerville 1972) the source applies. For the
  biome models it gives no σ and applies none, and canopy does the same.
- Chave et al. 2014 (Global Change Biology 20: 3177-3190, eq. 4) from DBH, for the DBH-then-Chave routes:
  ``AGB = 0.0673 (ρ DBH² H)^0.976``, residual standard error 0.357 on the log scale. It is applied as published,
  without a correction (as the R package BIOMASS does).
- Carbon is ``AGB × carbon fraction``, 0.47 by default (IPCC 2006, vol. 4, table 4.3).

**Uncertainty.** A tree's standard deviation comes from Monte Carlo. In each of :data:`DRAWS` draws, its height
varies by its own standard deviation (when the map has an uncertainty), and each equation's residual is drawn on
the log scale. Every tree has its own seeded generator (the seed and its ``tree_id``), so its figures do not depend
on how the map was cut into blocks.

**Totals.** Trees are not independent samples of one equation's error: the equation may be biased for this forest
as a whole, and that error does not average out over the trees of a stand (Chave et al. 2004, Phil. Trans. R. Soc.
B 359: 409-420; Réjou-Méchain et al. 2017, Methods Ecol. Evol. 8: 1163-1167, which draw the shared part from the
coefficients' posterior). The coefficients' covariance of these equations is not published, so
:func:`total` treats a share ``shared`` of the trees' errors as common to all of them:
``var = (1 - shared) Σ sd_i² + shared (Σ sd_i)²``. By default ``shared = 1``, the conservative reading that
carbon reporting asks for: the interval of a total is then as wide, relatively, as one tree's.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from canopy.errors import CanopyError

DRAWS = 1000
CARBON_FRACTION = 0.47
"""IPCC (2006) default carbon fraction of dry biomass."""
CHAVE2014 = (0.0673, 0.976, 0.357)
"""Chave et al. 2014, eq. 4: ``AGB = a (ρ D² H)^b``, and the residual standard error of ln AGB."""
DEFAULT = "jucker2017-global-chave2014"
"""The allometry when none is named: Jucker's global DBH model, then Chave 2014, for a forest of unknown type."""


class AllometryError(CanopyError, ValueError):
    """An unknown allometry, or equations that cannot be used."""


@dataclass(frozen=True)
class PowerLaw:
    """``y = a x^b``, times ``exp(σ²/2)`` when the residual standard deviation ``sigma`` (log scale) is known."""

    a: float
    b: float
    sigma: float | None = None

    def __post_init__(self) -> None:
        for name in ("a", "b", "sigma"):
            value = getattr(self, name)
            if value is None and name == "sigma":
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0 or (
                    name == "a" and value == 0):
                raise AllometryError(f"Coefficient {name} = {value!r} must be a {'positive' if name == 'a' else 'non-negative'} "
                                     "number; check the equation's coefficients.")

    def mean(self, x: np.ndarray) -> np.ndarray:
        """The bias-corrected prediction."""
        correction = math.exp(self.sigma**2 / 2) if self.sigma else 1.0
        return self.a * np.power(x, self.b) * correction

    def draw(self, x: np.ndarray, normal: np.ndarray) -> np.ndarray:
        """Predictions with a residual of ``normal`` standard deviations on the log scale (no correction: the draws' mean
        holds it)."""
        return self.a * np.power(x, self.b) * np.exp((self.sigma or 0.0) * normal)


@dataclass(frozen=True)
class Allometry:
    """A route from a tree's height and crown diameter to its DBH, AGB and carbon.

    ``dbh`` maps H × CD to DBH (cm). ``agb`` maps H × CD to AGB (kg) directly (Jucker's models), or is None, in which
    case AGB follows Chave et al. 2014 from DBH, H and ``wood_density`` (g/cm³).

    Raises
    ------
    AllometryError
        If a coefficient, the wood density or the carbon fraction is out of range.

    .. versionadded:: 0.3.0
    """

    name: str
    source: str
    dbh: PowerLaw
    agb: PowerLaw | None = None
    wood_density: float | None = None
    carbon_fraction: float = CARBON_FRACTION

    def __post_init__(self) -> None:
        if self.agb is None and not (isinstance(self.wood_density, (int, float)) and 0.1 <= self.wood_density <= 1.5):
            raise AllometryError(f"Allometry {self.name} needs a wood density between 0.1 and 1.5 g/cm³, got "
                                 f"{self.wood_density!r}; pass --wood-density.")
        if not 0 < self.carbon_fraction <= 1:
            raise AllometryError(f"Carbon fraction {self.carbon_fraction!r} must be between 0 and 1 (IPCC default 0.47).")

    @property
    def route(self) -> str:
        """``direct`` (AGB from H × CD) or ``dbh-chave2014``."""
        return "direct" if self.agb is not None else "dbh-chave2014"

    def dbh_cm(self, height: np.ndarray, crown_diameter: np.ndarray) -> np.ndarray:
        """Stem diameter at breast height (cm)."""
        return self.dbh.mean(np.asarray(height, float) * np.asarray(crown_diameter, float))

    def agb_kg(self, height: np.ndarray, crown_diameter: np.ndarray) -> np.ndarray:
        """Aboveground biomass (kg)."""
        height, crown_diameter = np.asarray(height, float), np.asarray(crown_diameter, float)
        if self.agb is not None:
            return self.agb.mean(height * crown_diameter)
        a, b, _ = CHAVE2014
        return a * np.power(self.wood_density * self.dbh_cm(height, crown_diameter) ** 2 * height, b)

    def agb_draws(self, height: np.ndarray, crown_diameter: np.ndarray, normals: np.ndarray) -> np.ndarray:
        """AGB (kg) of each draw and tree, for draws of heights (draws, trees) and three standard normals per draw and
        tree (3, draws, trees): the DBH residual, the AGB residual, unused for direct routes."""
        product = height * crown_diameter
        if self.agb is not None:
            return self.agb.draw(product, normals[1])
        a, b, sigma = CHAVE2014
        dbh = self.dbh.draw(product, normals[0])
        return a * np.power(self.wood_density * dbh**2 * height, b) * np.exp(sigma * normals[1])

    def describe(self) -> str:
        """One line for a file's metadata: the name, route, wood density, carbon fraction and source."""
        density = f", wood density {self.wood_density:g} g/cm³" if self.agb is None else ""
        return (f"{self.name} ({self.route}{density}; carbon fraction {self.carbon_fraction:g}): {self.source}")


@dataclass(frozen=True)
class TreeBiomass:
    """Per tree: DBH (cm), AGB and carbon (kg), and the AGB's standard deviation (kg) from Monte Carlo."""

    dbh_cm: np.ndarray
    agb_kg: np.ndarray
    agb_sd_kg: np.ndarray
    carbon_kg: np.ndarray
    carbon_sd_kg: np.ndarray


def tree_biomass(allometry: Allometry, tree_id: np.ndarray, height: np.ndarray, crown_diameter: np.ndarray,
                 height_sd: np.ndarray | None = None, *, draws: int = DRAWS, seed: int = 0) -> TreeBiomass:
    """Each tree's DBH, AGB and carbon, and their standard deviations by Monte Carlo (module docstring).

    Parameters
    ----------
    allometry
        The equations.
    tree_id
        Each tree's id (seeds its draws, so a tree gets the same figures however the map was cut).
    height, crown_diameter
        Metres.
    height_sd
        Each height's standard deviation (m), e.g. the map's uncertainty at the top; None for exact heights.
    draws
        Monte Carlo draws per tree.
    seed
        The run's seed.

    Returns
    -------
    TreeBiomass
    """
    height = np.asarray(height, float)
    crown_diameter = np.asarray(crown_diameter, float)
    sd = np.zeros_like(height) if height_sd is None else np.nan_to_num(np.asarray(height_sd, float))
    normals = np.empty((3, draws, height.size))
    for k, tree in enumerate(np.asarray(tree_id, np.int64)):
        normals[:, :, k] = np.random.default_rng([seed, int(tree)]).standard_normal((3, draws))
    heights = np.maximum(height + sd * normals[2], 0.1)
    spread = allometry.agb_draws(heights, crown_diameter, normals).std(axis=0) if height.size else np.zeros(0)
    agb = allometry.agb_kg(height, crown_diameter)
    fraction = allometry.carbon_fraction
    return TreeBiomass(allometry.dbh_cm(height, crown_diameter), agb, spread, agb * fraction, spread * fraction)


def total(values: np.ndarray, sds: np.ndarray, shared: float = 1.0, level: float = 0.9) -> tuple[float, float, float, float]:
    """The total of trees' values, its standard deviation with a share ``shared`` of their errors common to all
    (module docstring), and its ``level`` interval from a log-normal of that mean and deviation.

    Returns
    -------
    tuple
        (total, sd, lower, upper).

    Raises
    ------
    AllometryError
        If ``shared`` is not between 0 and 1.
    """
    if not 0.0 <= shared <= 1.0:
        raise AllometryError(f"The shared share of the trees' errors, {shared!r}, must be between 0 and 1.")
    values, sds = np.asarray(values, float), np.asarray(sds, float)
    mean = float(values.sum())
    sd = math.sqrt((1 - shared) * float((sds**2).sum()) + shared * float(sds.sum()) ** 2)
    if mean <= 0 or sd == 0:
        return mean, sd, mean, mean
    from scipy.stats import norm

    s2 = math.log1p((sd / mean) ** 2)
    mu = math.log(mean) - s2 / 2
    z = float(norm.ppf(0.5 + level / 2))
    return mean, sd, math.exp(mu - z * math.sqrt(s2)), math.exp(mu + z * math.sqrt(s2))


_JUCKER = ("Jucker et al. 2017, Global Change Biology 23: 177-190; coefficients as applied by the R package itcSegment")
_JUCKER_DBH = PowerLaw(0.557, 0.809, 0.056)
_BIOMES = {  # region-biome-clade: (a, b) of Jucker's DBH model (itcSegment's table; no σ published there)
    "afrotropic-tropical-angiosperm": (0.428, 0.821), "afrotropic-woodland-angiosperm": (1.268, 0.750),
    "australasia-temperate-mixed-angiosperm": (0.769, 0.811), "australasia-temperate-mixed-gymnosperm": (0.603, 0.891),
    "australasia-woodland-angiosperm": (0.519, 0.890), "indomalaya-tropical-angiosperm": (0.486, 0.802),
    "nearctic-boreal-angiosperm": (0.286, 0.865), "nearctic-boreal-gymnosperm": (0.815, 0.771),
    "nearctic-temperate-coniferous-angiosperm": (0.343, 0.844), "nearctic-temperate-coniferous-gymnosperm": (0.589, 0.817),
    "nearctic-temperate-mixed-angiosperm": (0.367, 0.887), "nearctic-temperate-mixed-gymnosperm": (0.861, 0.755),
    "nearctic-woodland-angiosperm": (0.617, 0.790), "nearctic-woodland-gymnosperm": (1.133, 0.745),
    "neotropic-tropical-angiosperm": (0.591, 0.781), "palearctic-boreal-angiosperm": (0.467, 0.839),
    "palearctic-boreal-gymnosperm": (1.430, 0.649), "palearctic-temperate-coniferous-angiosperm": (0.273, 0.927),
    "palearctic-temperate-coniferous-gymnosperm": (0.974, 0.748), "palearctic-temperate-mixed-angiosperm": (0.694, 0.730),
    "palearctic-temperate-mixed-gymnosperm": (1.004, 0.730), "palearctic-tropical-angiosperm": (0.540, 0.791),
    "palearctic-woodland-angiosperm": (0.910, 0.738), "palearctic-woodland-gymnosperm": (1.373, 0.717),
}
DEFAULT_WOOD_DENSITY = 0.6
"""g/cm³ for the DBH-then-Chave routes when none is given: about the mean of the Global Wood Density Database
(Zanne et al. 2009) over tropical trees; temperate conifers are nearer 0.4-0.5, so pass yours."""


def _builtin() -> dict[str, Allometry]:
    """The equations canopy carries, by name."""
    chave = "then Chave et al. 2014, Global Change Biology 20: 3177-3190 (eq. 4)"
    found = {
        "jucker2017-angiosperm": Allometry("jucker2017-angiosperm", _JUCKER, _JUCKER_DBH, PowerLaw(0.016, 2.013, 0.204)),
        "jucker2017-gymnosperm": Allometry("jucker2017-gymnosperm", _JUCKER, _JUCKER_DBH, PowerLaw(0.109, 1.790, 0.204)),
        DEFAULT: Allometry(DEFAULT, f"{_JUCKER} (global DBH model), {chave}", _JUCKER_DBH, None, DEFAULT_WOOD_DENSITY),
    }
    for biome, (a, b) in _BIOMES.items():
        name = f"jucker2017-{biome}-chave2014"
        found[name] = Allometry(name, f"{_JUCKER} (DBH model for {biome}), {chave}", PowerLaw(a, b), None, DEFAULT_WOOD_DENSITY)
    return found


ALLOMETRIES = _builtin()


def get_allometry(name: str | os.PathLike, *, wood_density: float | None = None,
                  carbon_fraction: float = CARBON_FRACTION) -> Allometry:
    """An allometry by name (:data:`ALLOMETRIES`), or read from a YAML file of the user's equations.

    The YAML holds ``name``, ``source``, ``dbh: {a, b, sigma}`` and either ``agb: {a, b, sigma}`` (AGB from H × CD)
    or ``wood_density`` (AGB by Chave et al. 2014 from the DBH), each a number, sigma optional.

    Parameters
    ----------
    name
        A built-in name, or a ``.yaml`` file.
    wood_density
        g/cm³ for a DBH-then-Chave route (None: the allometry's own).
    carbon_fraction
        Carbon per unit of dry biomass.

    Returns
    -------
    Allometry

    Raises
    ------
    AllometryError
        If the name is unknown, or the file is not a valid equation.
    """
    text = str(name)
    if text.endswith((".yaml", ".yml")):
        allometry = _read_yaml(Path(text))
    elif text in ALLOMETRIES:
        allometry = ALLOMETRIES[text]
    else:
        close = [n for n in ALLOMETRIES if text.lower() in n][:3]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise AllometryError(f"Unknown allometry {text!r}{hint}; use a name from docs/biomass.md, or a YAML "
                             "file of your equations.")
    changes = {"carbon_fraction": carbon_fraction}
    if wood_density is not None:
        if allometry.agb is not None:
            raise AllometryError(f"Allometry {allometry.name} takes no wood density (it gives AGB from height and crown "
                                 "directly); leave --wood-density out or use a DBH-then-Chave route.")
        changes["wood_density"] = wood_density
    return replace(allometry, **changes)


def _read_yaml(path: Path) -> Allometry:
    """The user's equations from a YAML file, checked."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise AllometryError(f"Allometry file {path} cannot be read ({exc}); pass a YAML file of equations.") from None
    if not isinstance(data, dict) or not isinstance(data.get("dbh"), dict) or not ("agb" in data or "wood_density" in data):
        raise AllometryError(f"Allometry file {path} needs `dbh: {{a, b, sigma}}` and `agb: {{a, b, sigma}}` or `wood_density`; "
                             "see docs/biomass.md.")
    unknown = sorted(set(data) - {"name", "source", "dbh", "agb", "wood_density"})
    if unknown:
        raise AllometryError(f"Allometry file {path} has unknown keys {unknown}; it takes name, source, dbh, agb and wood_density.")

    def law(key: str) -> PowerLaw | None:
        if key not in data:
            return None
        entry = data[key]
        if not isinstance(entry, dict) or set(entry) - {"a", "b", "sigma"} or not {"a", "b"} <= set(entry):
            raise AllometryError(f"Allometry file {path}: `{key}` needs a and b (and optionally sigma), numbers.")
        return PowerLaw(entry["a"], entry["b"], entry.get("sigma"))

    return Allometry(str(data.get("name", path.stem)), str(data.get("source", f"user equations in {path.name}")),
                     law("dbh"), law("agb"), data.get("wood_density"))
