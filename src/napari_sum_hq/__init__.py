"""napari plugin of napari-sum-hq (interactive SAM / HQ-SAM / SUM segmentation)."""
