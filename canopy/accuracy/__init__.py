"""How far a map agrees with a reference: ``evaluate`` against lidar, trees scored against reference crowns, and the
calibration fitted on lidar with its held-out proof. Nothing here runs while predicting."""
