"""fastes: fast facial-expression recognition on emotion sketches.

Public API: :func:`sketch` and :func:`remap` (landmarks to the paper's emotion
sketches), :class:`FaceFinder` (image to boxes and 68 landmarks) and ``CLASSES``.
"""
from .face import FaceFinder, Faces
from .io import ImageError, read_image
from .sketch import DegenerateFaceError, remap, sketch

__version__ = "0.1.0"

# The paper's four classes, in the order every probability array uses.
CLASSES = ("positive", "negative", "awe", "neutral")

__all__ = [
    "CLASSES", "DegenerateFaceError", "FaceFinder", "Faces", "ImageError",
    "read_image", "remap", "sketch", "__version__",
]
