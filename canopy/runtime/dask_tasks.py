"""What runs on Dask workers: a block's two tasks, and the per-process state they share.

A worker process loads the model once, on its first task of a run, and keeps it (keyed by the
model, device and input normalisation) for every block it computes and for the next run with the
same model; the sources are opened once per plan. Tasks are idempotent: a task run again (its
worker died) writes the same files.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import sys
import threading
import warnings

import numpy as np
import torch

from canopy.errors import ImageryReadError
from canopy.io.gdal_env import bound_gdal_cache_for_this_process
from canopy.io.partial import PartialRun
from canopy.runtime.block_worker import BlockWorker, PlacedModel, load_model
from canopy.runtime.device import select_device
from canopy.runtime.plan import ModelIdentity, RunPlan
from canopy.runtime.stitch import BorderChips, blend_block, border_chips
from canopy.grid import Block

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


_LOCK = threading.Lock()
_MODEL_CALLS = threading.Lock()  # one model call at a time per process, on all its threads
_MODEL: dict[bytes, PlacedModel] = {}
_MODEL_WARNINGS: list[tuple[str, type]] = []
"""What loading the model in ``_MODEL`` warned (random weights, ...): said again on every run that uses it."""
_WORKER: dict[int, tuple[RunPlan, BlockWorker]] = {}
_LOADS = 0


def model_loads() -> int:
    """How many times this process has loaded a model for a distributed run (what tests count)."""
    return _LOADS


def hold(plan: RunPlan) -> RunPlan:
    """The plan as a task result, so every worker fetches it once and Dask can recompute it if lost."""
    return plan


def _threads() -> int:
    """This worker's thread count, which PyTorch's thread pool uses too."""
    from distributed import get_worker

    try:
        return get_worker().state.nthreads
    except (ValueError, AttributeError):
        return torch.get_num_threads()


def ready_worker(plan: RunPlan) -> BlockWorker:
    """This process's ready worker for ``plan``: the model loaded once per model, sources opened once per plan.

    Only the latest model and plan are kept, so a long-lived worker serving many runs holds one of each.
    """
    global _LOADS
    with _LOCK:
        cached = _WORKER.get(id(plan))
        if cached is not None and cached[0] is plan:  # the plan is held here, so its id is not reused
            return cached[1]
        model_key = pickle.dumps((plan.model.key, plan.device, plan.precision, plan.offline, plan.input_affine))
        if model_key not in _MODEL:
            _MODEL.clear()
            _undo_nanny_malloc_trim()
            bound_gdal_cache_for_this_process()
            _take_own_gpu(plan)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                loaded = load_model(plan)
            _MODEL[model_key] = loaded
            _MODEL_WARNINGS[:] = [(str(w.message), w.category) for w in caught]
            _LOADS += 1
        for old_plan, _ in _WORKER.values():
            old_plan.close()
        _WORKER.clear()
        try:
            worker = BlockWorker(plan, _MODEL[model_key])
        except ImageryReadError as exc:
            raise ImageryReadError(
                f"On Dask worker {_address()}: {exc} Local paths must be visible to every worker at the same path "
                "(shared storage), or use URLs."
            ) from exc
        _WORKER[id(plan)] = (plan, worker)
        return worker


def _take_own_gpu(plan: RunPlan) -> None:
    """Make this worker's ``cuda`` its own GPU when several are visible: worker ``name`` of a local cluster (0, 1, ...)
    takes GPU ``name`` modulo their count, so ``--workers N --device cuda`` spreads N workers over the GPUs.

    Workers that each see one GPU (``dask-cuda``, or ``CUDA_VISIBLE_DEVICES`` per worker) are left as they are.
    """
    if select_device(plan.device).type != "cuda" or torch.cuda.device_count() < 2:
        return
    from distributed import get_worker

    try:
        name = get_worker().name
    except ValueError:  # not on a Dask worker
        return
    if isinstance(name, int):
        torch.cuda.set_device(name % torch.cuda.device_count())


def _undo_nanny_malloc_trim() -> None:
    """Give this worker process glibc's usual malloc thresholds back, where a Dask nanny set ``MALLOC_TRIM_THRESHOLD_``.

    The nanny sets it (64 kB) before it starts a worker, to hand memory back to the system sooner;
    it also pins glibc's mmap threshold at 128 kB, so every large tensor PyTorch allocates becomes
    a fresh mapping paid in page faults: the model ran a third slower (docs/benchmarks.md). These
    are the thresholds glibc itself settles on in a process that frees large blocks (32 and 64 MB).
    """
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)
    libc.mallopt(_M_TRIM_THRESHOLD, 64 * 2**20)


def _address() -> str:
    """This worker's address, for messages."""
    from distributed import get_worker

    try:
        return get_worker().address
    except ValueError:
        return f"process {os.getpid()}"


def describe(plan: RunPlan) -> tuple[ModelIdentity, list[tuple[str, type]]]:
    """Load the model on a worker (kept for its blocks) and say what ran, with the warnings it gave.

    The model's own warnings (random weights, an untrained head) come back on every run, also when
    this process loaded the model for an earlier one.
    """
    torch.set_num_threads(_threads())  # as the blocks' tasks run, so the identity names the threads they use
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        worker = ready_worker(plan)
    return worker.identity, [*_MODEL_WARNINGS, *((str(w.message), w.category) for w in caught)]


def chips_task(plan: RunPlan, directory: str, block: Block) -> int:
    """Predict the chips a block owns and store them in the partial folder; return how many."""
    torch.set_num_threads(_threads())
    partial = PartialRun.attach(directory)
    partial.start_attempt(f"{block.key}.chips", _address())
    worker = ready_worker(plan)
    inp = worker.read(block)
    with _MODEL_CALLS:
        own = worker.chips(inp)
    handed = border_chips(block, plan.layout, own, plan.grid.shape)
    partial.write_border(block.key, handed)
    partial.write_inner(block.key, {at: h for at, h in own.items() if at not in handed}, np.ascontiguousarray(inp.block_valid))
    partial.end_attempt(f"{block.key}.chips")
    return len(own)


def blend_task(plan: RunPlan, directory: str, block: Block, own_count: int, *earlier: int) -> int:
    """Blend a block from its own chips and those its earlier neighbours handed on, and store it; return its chip count."""
    partial = PartialRun.attach(directory)
    if partial.is_done(block):  # a retry after the worker that finished it died before saying so
        return own_count
    partial.start_attempt(f"{block.key}.blend", _address())
    inner, valid = partial.read_inner(block.key)
    borders = BorderChips(plan.block_size, plan.grid.shape, partial.read_border)
    own = {**inner, **partial.read_border(block.key)}
    calibrate = None if plan.calibration is None else plan.calibration.apply
    partial.write_block(block, blend_block(block, plan.layout, own, borders, valid, calibrate, plan.uncertainty))
    partial.end_attempt(f"{block.key}.blend")
    return own_count
