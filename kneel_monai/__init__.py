"""kneel-monai: knee anatomical landmark localisation (KNEEL) for MONAI, Slicer and MONAI Label."""

__version__ = "0.5.1"
