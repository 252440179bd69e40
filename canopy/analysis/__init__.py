"""After the map: open it as xarray, statistics per polygon, canopy cover, height classes, a plot."""
