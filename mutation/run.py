"""`make mutate`: mutation testing of the modules whose behaviour the README promises, with cosmic-ray.

Each target is a few modules and the tests that should notice when one of their lines breaks. For each,
the repository's files are copied to a scratch tree (``.mutation/<target>/tree``; the working tree is
never touched), cosmic-ray mutates that copy on disk one mutation at a time and runs the target's tests
there, and the mutations that no test noticed (survivors) are listed in ``.mutation/report.md``.

Mutating files on disk, rather than switching mutants inside one process, is why cosmic-ray was chosen:
many of canopy's tests run the code in other processes (the ``canopy`` command, killed runs, Dask
workers), which import the mutated copy through ``PYTHONPATH`` like the test process does.

Sessions are kept: running again continues where a stopped run left off (``--fresh`` starts over);
``--recheck`` runs only the survivors again, against the tests as they are now, after tests were added.
Usage: ``python mutation/run.py [--target NAME ...] [--fresh] [--recheck] [--list]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".mutation"


@dataclass(frozen=True)
class Target:
    """Modules to mutate and the tests that should fail when one of their lines breaks."""

    modules: tuple[str, ...]
    tests: tuple[str, ...]


TARGETS = {
    "resume": Target(("canopy/io/partial.py", "canopy/io/output_lock.py", "canopy/io/atomic.py"),
                     ("tests/test_resume.py",
                      "tests/test_atomic_outputs.py::test_a_kill_after_each_file_leaves_whole_files_and_the_next_run_finishes[trees]",
                      "tests/test_atomic_outputs.py::test_a_run_killed_before_its_map_lands_resumes_to_the_bytes_of_an_uninterrupted_run")),
    "grid": Target(("canopy/grid.py",), ("tests/test_grid.py", "tests/test_chips.py")),
    "blending": Target(("canopy/runtime/stitch.py",), ("tests/test_stitch.py", "tests/test_chips.py",
                                               "tests/test_memory.py::test_peak_memory_does_not_grow_with_the_region[predict]")),
    "radiometry": Target(("canopy/imagery/radiometry.py",), ("tests/test_imagery.py",)),
    "imagery": Target(("canopy/imagery/geotiff.py", "canopy/imagery/raster_checks.py", "canopy/imagery/mosaic.py",
                       "canopy/imagery/discover.py"),
                      ("tests/test_imagery.py", "tests/test_tiles.py")),
    "calibration": Target(("canopy/calibration.py", "canopy/accuracy/calibration_fit.py"), ("tests/test_calibration.py",
                                                      "tests/test_atomic_outputs.py::test_a_kill_after_each_file_leaves_whole_files_and_the_next_run_finishes[calibrate]")),
    "trees": Target(("canopy/analysis/tree_tops.py", "canopy/analysis/crowns.py"), ("tests/test_trees.py",)),
    "change": Target(("canopy/analysis/change.py",), ("tests/test_change.py",)),
    "uncertainty": Target(("canopy/accuracy/interval_fit.py", "canopy/accuracy/point_references.py"), ("tests/test_uncertainty.py",)),
    "blockwise": Target(("canopy/blockwise/parts.py", "canopy/blockwise/store.py", "canopy/blockwise/vectors.py"),
                        ("tests/test_blockwise.py", "tests/test_forest.py", "tests/test_change.py")),
}

# Operators kept (29 of cosmic-ray 8.7's 213): one inverse per arithmetic operator, each comparison's boundary
# or negation, dropped negations, boolean and loop changes, numbers off by one, and exception types. The other
# 184 (every operator replaced by every other, variable renames, decorators removed) multiply the run time
# many times over and mostly repeat what these find.
KEPT = (
    r"ReplaceBinaryOperator_(Add_Sub|Sub_Add|Mul_Div|Div_Mul|FloorDiv_Div|Mod_FloorDiv|Pow_Mul|BitAnd_BitOr|BitOr_BitAnd)",
    r"ReplaceComparisonOperator_(Lt_LtE|LtE_Lt|Gt_GtE|GtE_Gt|Eq_NotEq|NotEq_Eq|Is_IsNot|IsNot_Is)",
    r"ReplaceUnaryOperator_Delete_(Not|USub|Invert)",
    r"AddNot", r"ReplaceTrueWithFalse", r"ReplaceFalseWithTrue", r"ReplaceAndWithOr", r"ReplaceOrWithAnd",
    r"ReplaceBreakWithContinue", r"NumberReplacer", r"ZeroIterationForLoop", r"ExceptionReplacer",
)


def _tool(name: str) -> str:
    """A cosmic-ray command installed beside this Python."""
    return str(Path(sys.executable).with_name(name))


def _copy_tree(tree: Path) -> None:
    """The repository's files (tracked and untracked, not ignored) copied to ``tree``."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name)


def _test_command(target: Target) -> list[str]:
    """The command that runs a target's tests, stopping at the first failure."""
    return [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *target.tests]


def _env(tree: Path) -> dict[str, str]:
    """The environment the tests run in: the copy ``tree`` imported first, by child processes too."""
    return {**os.environ, "PYTHONPATH": str(tree), "CANOPY_OFFLINE": "1"}


def _config(target: Target, timeout: float) -> str:
    """The cosmic-ray configuration for one target."""
    command = " ".join(_test_command(target))
    exclude = "^(?!core/(" + "|".join(KEPT) + ")$)"
    return (f"[cosmic-ray]\nmodule-path = {json.dumps(list(target.modules))}\ntimeout = {timeout:.0f}\n"
            f"excluded-modules = []\ntest-command = {json.dumps(command)}\n\n[cosmic-ray.distributor]\nname = \"local\"\n\n"
            f"[cosmic-ray.filters.operators-filter]\nexclude-operators = {json.dumps([exclude])}\n")


def _baseline(target: Target, tree: Path, env: dict) -> float:
    """Seconds the target's tests take on the unmutated copy; stop if they fail there."""
    start = time.monotonic()
    done = subprocess.run(_test_command(target), cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the tests of this target fail before any mutation:\n{done.stdout[-3000:]}")
    return time.monotonic() - start


def _fresh_copy(tree: Path) -> None:
    """``tree`` made anew from the repository (a stopped run may have left a mutated file in the old one)."""
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    _copy_tree(tree)


def run_target(name: str, target: Target, fresh: bool) -> None:
    """Run (or continue) one target's session; a continued one runs its pending mutations against today's tests
    (the modules must be unchanged since the session began: ``--fresh`` otherwise)."""
    folder = WORK / name
    tree, session = folder / "tree", folder / "session.sqlite"
    if fresh and folder.exists():
        shutil.rmtree(folder)
    env = _env(tree)
    _fresh_copy(tree)
    if not session.exists():
        seconds = _baseline(target, tree, env)
        config = folder / "config.toml"
        config.write_text(_config(target, max(60.0, 4 * seconds)))
        subprocess.run([_tool("cosmic-ray"), "init", str(config), str(session)], cwd=tree, check=True)
        subprocess.run([_tool("cr-filter-operators"), str(session), str(config)], cwd=tree, check=True)
        subprocess.run([_tool("cr-filter-pragma"), str(session)], cwd=tree, check=True)
        print(f"{name}: tests take {seconds:.0f} s unmutated", flush=True)
    subprocess.run([_tool("cosmic-ray"), "exec", str(folder / "config.toml"), str(session)], cwd=tree, env=env, check=True)


def recheck(name: str, target: Target) -> None:
    """Run a session's survivors again on a fresh copy of the repository as it is now (after tests were added for
    them), and record their new outcome in the session: minutes, where the whole target takes hours."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkResult

    folder = WORK / name
    tree = folder / "recheck"
    _fresh_copy(tree)
    command = " ".join(_test_command(target))
    with use_db(str(folder / "session.sqlite"), WorkDB.Mode.open) as db:
        survivors = [item for item, result in db.completed_work_items if result.test_outcome == TestOutcome.SURVIVED]
        for item in survivors:
            mutation = item.mutations[0]
            done = subprocess.run([_tool("cosmic-ray"), "mutate-and-test", str(mutation.module_path), mutation.operator_name,
                                   str(mutation.occurrence), command], cwd=tree, env=_env(tree), capture_output=True, text=True,
                                  check=True)
            db.set_result(item.job_id, WorkResult(**json.loads(done.stdout)))
    print(f"{name}: {len(survivors)} survivors run again", flush=True)


def _outcomes(session: Path) -> tuple[list[dict], dict[str, int]]:
    """A session's survivors (the mutations no test noticed) and how many mutations each outcome has
    (skipped: filtered operators, not run), from one dump of it."""
    dump = subprocess.run([_tool("cosmic-ray"), "dump", str(session)], capture_output=True, text=True, check=True).stdout
    survivors, counts = [], {}
    for line in filter(None, dump.splitlines()):
        item, result = json.loads(line)
        outcome = "pending" if not result else result.get("test_outcome") or result.get("worker_outcome")
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome == "survived":
            mutation = item["mutations"][0]
            survivors.append({"module": mutation["module_path"], "line": mutation["start_pos"][0],
                              "operator": mutation["operator_name"], "diff": result.get("diff") or ""})
    return survivors, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", action="append", choices=sorted(TARGETS), help="run only this target (repeatable)")
    parser.add_argument("--fresh", action="store_true", help="start the sessions over")
    parser.add_argument("--list", action="store_true", help="list the targets and stop")
    parser.add_argument("--recheck", action="store_true",
                        help="only run the survivors again, against the tests as they are now (pending mutations wait)")
    args = parser.parse_args()
    if args.list:
        for name, target in TARGETS.items():
            print(f"{name}: {', '.join(target.modules)} <- {', '.join(target.tests)}")
        return
    for name in args.target or list(TARGETS):
        if args.recheck:
            recheck(name, TARGETS[name])
        else:
            run_target(name, TARGETS[name], args.fresh)
    lines = ["# Mutation survivors", ""]
    for name in TARGETS:  # every target with a session, run now or before
        session = WORK / name / "session.sqlite"
        if not session.exists():
            continue
        survivors, counts = _outcomes(session)
        print(f"{name}: {counts}", flush=True)
        lines += [f"## {name}: {counts.get('killed', 0)} killed, {len(survivors)} survived, {counts.get('pending', 0)} not run yet", ""]
        for s in survivors:
            lines += [f"- `{s['module']}:{s['line']}` {s['operator']}", "", "```diff", s["diff"], "```", ""]
    (WORK / "report.md").write_text("\n".join(lines))
    print(f"survivors listed in {WORK / 'report.md'}")


if __name__ == "__main__":
    main()
