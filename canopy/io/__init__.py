"""Writing results: partial runs, Cloud-Optimized GeoTIFFs, QGIS styles and quicklooks."""
