"""fastes: fast facial-expression recognition on emotion sketches.

Public API: :func:`sketch` and :func:`remap` (landmarks to the paper's emotion
sketches), :class:`Pipeline` (image to each face's expression), :class:`FaceFinder`
(image to boxes and 68 landmarks) and ``CLASSES``.
"""
# The paper's four classes, in the order every probability array uses (defined before
# the submodules that import it).
CLASSES = ("positive", "negative", "awe", "neutral")

# io first: it sets OpenCV's pixel limit, which OpenCV reads once, when cv2 is imported
from .io import ImageError, read_image  # noqa: E402, I001
from .face import FaceFinder, Faces  # noqa: E402
from .pipeline import Face, Pipeline  # noqa: E402
from .sketch import DegenerateFaceError, remap, sketch  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "CLASSES", "DegenerateFaceError", "Face", "FaceFinder", "Faces", "ImageError", "Pipeline",
    "read_image", "remap", "sketch", "__version__",
]
