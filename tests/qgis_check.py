"""Open an exported QGIS project in a real, headless QGIS and report what it sees, as JSON on stdout.

Run with the interpreter that has PyQGIS (the distribution's python3-qgis):
    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis_check.py PROJECT.qgs PNG
"""

import json
import os
import sqlite3
import sys

from qgis.core import (
    QgsApplication,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize

project_path, png = sys.argv[1], sys.argv[2]
app = QgsApplication([], False)
app.initQgis()
project = QgsProject.instance()
report = {"read": project.read(project_path), "layers": []}
for layer in project.mapLayers().values():
    entry = {"name": layer.name(), "valid": layer.isValid(), "crs": layer.crs().authid(),
             "extent": [layer.extent().xMinimum(), layer.extent().yMinimum(), layer.extent().xMaximum(), layer.extent().yMaximum()],
             "source": layer.source()}
    if isinstance(layer, QgsRasterLayer):
        renderer = layer.renderer()
        entry["renderer"] = renderer.type()
        entry["legend"] = [label for label, _ in renderer.legendSymbologyItems()]
    if isinstance(layer, QgsVectorLayer):
        entry["fields"] = [field.name() for field in layer.fields()]
        entry["features"] = layer.featureCount()
        entry["renderer"] = layer.renderer().type()
        entry["labels"] = layer.labelsEnabled()
        gpkg = layer.source().split("|")[0]
        alone = QgsVectorLayer(layer.source(), "alone", "ogr")  # as dragged into another project: default style from the GeoPackage
        symbol = alone.renderer().symbol() if alone.renderer().type() == "singleSymbol" else None
        entry["default_style_outline"] = symbol.symbolLayer(0).strokeColor().name() if symbol else None
        with sqlite3.connect(gpkg) as db:
            entry["layer_styles"] = db.execute("SELECT f_table_name, useAsDefault FROM layer_styles").fetchall()
    report["layers"].append(entry)
settings = QgsMapSettings()
settings.setLayers(list(project.layerTreeRoot().checkedLayers()))
settings.setDestinationCrs(project.crs())
settings.setExtent(
    next(layer for layer in project.mapLayers().values() if isinstance(layer, QgsRasterLayer)).extent())
settings.setOutputSize(QSize(400, 400))
job = QgsMapRendererParallelJob(settings)
job.start()
job.waitForFinished()
image = job.renderedImage()
image.save(png, "PNG")
colours = {}
for x in range(0, 400, 8):
    for y in range(0, 400, 8):
        c = image.pixelColor(x, y)
        colours[(c.red(), c.green(), c.blue(), c.alpha())] = colours.get((c.red(), c.green(), c.blue(), c.alpha()), 0) + 1
report["greenish_pixels"] = sum(n for (r, g, b, a), n in colours.items() if a > 0 and g > r + 10 and g > b + 10)
report["sampled_pixels"] = sum(colours.values())
report["project_crs"] = project.crs().authid()
print(json.dumps(report), flush=True)
os._exit(0)  # PyQGIS can crash while tearing Qt down; the report is out
