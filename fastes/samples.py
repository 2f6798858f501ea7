"""The bundled sample photos: 6 London set images (CC BY 4.0, DeBruine & Jones 2017,
doi:10.6084/m9.figshare.5047666.v5; see data/samples/ATTRIBUTION.md)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["sample_images", "ATTRIBUTION"]

ATTRIBUTION = ("London set images, CC BY 4.0: DeBruine & Jones (2017), Face Research Lab London Set, "
               "doi:10.6084/m9.figshare.5047666.v5")


def sample_images() -> list[Path]:
    """Paths of the bundled London set sample images, sorted."""
    folder = resources.files("fastes") / "data" / "samples"
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".jpg"))
