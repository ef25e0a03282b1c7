"""napari plugin: train and predict widgets, and the simulator as sample data (``napari.yaml``)."""
