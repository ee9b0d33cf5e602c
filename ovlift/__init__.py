"""ovlift: lift 2D open-vocabulary knowledge onto 3D point clouds and distil it."""

__version__ = "0.1.0"
