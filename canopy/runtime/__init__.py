"""Running predictions: device and precision, the model on chips, and the block pipeline."""
