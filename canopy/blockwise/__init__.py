"""The block engine every analysis after the map runs on (lidR's ``catalog_apply`` is the model).

An analysis supplies a kernel (what one block computes, from windows it reads with a halo) and its
parameters; the engine owns the rest, once:

- :mod:`~canopy.blockwise.layout`: the blocks of a grid, their windows with a halo, inner slices and affines;
- :mod:`~canopy.blockwise.store`: the run's folder of finished blocks beside the output (fingerprint,
  atomic files, ``--resume``, damaged blocks computed again), the same folder ``predict`` keeps;
- :mod:`~canopy.blockwise.execute`: a stage of kernels over the blocks, on threads in this process or on a
  Dask cluster, with tasks that carry paths and windows, never arrays;
- :mod:`~canopy.blockwise.parts`: connected parts labelled per block and joined across block edges;
- :mod:`~canopy.blockwise.vectors`: polygons cut per block, dissolved by part as soon as a part is whole;
- :mod:`~canopy.blockwise.run`: one run: the output's lock, its store, its cluster, its COG.
"""
