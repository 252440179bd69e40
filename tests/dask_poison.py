"""Dask worker preload for the tests: a block named in the file at ``$CANOPY_TEST_POISON`` kills its worker
process when the worker reads it, as a block that crashes GDAL would, on every worker that tries."""

from __future__ import annotations

import os


def dask_setup(worker) -> None:
    import canopy.runtime.block_worker as block_worker

    original = block_worker.BlockWorker.read

    def read(self, block):
        path = os.environ.get("CANOPY_TEST_POISON", "")
        if path and os.path.exists(path) and block.key in open(path).read().split():
            os._exit(1)
        return original(self, block)

    block_worker.BlockWorker.read = read
