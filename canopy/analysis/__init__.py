"""After the map: open it as xarray, statistics and stand structure per polygon, cover and classes, trees and crowns,
forest / non-forest, change between dates, plots and QGIS exports."""
