"""Packaging: environment.yml and pyproject.toml list the same runtime dependencies."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names of packages whose PyPI name differs
CONDA_NAMES = {"torch": "pytorch", "matplotlib": "matplotlib-base"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement, maxsplit=1)[0].strip().lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pypi = {CONDA_NAMES.get(_name(r), _name(r)): r for r in project["dependencies"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {_name(d): d for d in env["dependencies"] if isinstance(d, str)}
    conda.pop("python"), conda.pop("pip")
    pip_only = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda.update({_name(d): d for d in pip_only if not d.startswith("-")})
    assert set(conda) == set(pypi)
    for name, requirement in pypi.items():
        floor = re.search(r">=\s*([\w.]+)", requirement)
        assert floor and f">={floor.group(1)}" in conda[name].replace(" ", ""), name
    assert f">={project['requires-python'].lstrip('>=')}" in next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))


def test_version_is_single_sourced():
    from canopy import __version__

    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    assert "dynamic" in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_changelog_starts_with_this_version():
    from canopy import __version__

    headings = re.findall(r"^## (\d+\.\d+\.\d+)", (ROOT / "CHANGELOG.md").read_text(), flags=re.M)
    assert headings and headings[0] == __version__, "a new version needs its CHANGELOG.md entry"
