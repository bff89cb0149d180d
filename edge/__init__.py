"""crackd: crack inspection on the edge (device side: numpy, OpenCV and a TFLite runtime only)."""

__version__ = "0.1.0"
