"""lunarseg: lunar rock segmentation from training to a lean rover runtime."""

__all__ = ["__version__"]
__version__ = "0.1.0"
