"""Write the de-identified pyramid as a tiled TIFF that OpenSlide opens.

Aperio-compatible layout (when the input is Aperio or states an objective power, which only the
Aperio layout can carry): level 0, a stripped thumbnail, reduced levels, then the label and macro
when kept. Generic layout otherwise: tiled levels with MPP in the resolution tags. Descriptions are
built from `SlideMetadata` only. Tiles stream from a callable one at a time, so memory does not
grow with the slide; BigTIFF when the data may pass 4 GB.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import tifffile

from deid.wsi.grid import LevelShape
from deid.wsi.metadata import (
    SlideMetadata,
    aperio_associated_description,
    aperio_level0_description,
    aperio_reduced_description,
    aperio_thumbnail_description,
    resolution_per_cm,
)
from deid.wsi.tiles import LevelCodec

BIGTIFF_THRESHOLD = 4 * 1024**3 - 256 * 1024**2


@dataclass(frozen=True)
class TiffPlan:
    meta: SlideMetadata
    levels: tuple[LevelShape, ...]
    codecs: tuple[LevelCodec, ...]
    tile: int
    quality: int
    aperio: bool


def write_pyramid_tiff(
    path: str,
    plan: TiffPlan,
    level_tiles: Callable[[int], Iterator[bytes]],
    thumbnail: np.ndarray | None,
    associated: Sequence[tuple[str, np.ndarray]] = (),
    estimated_bytes: int = 0,
) -> None:
    """Write the file at the local `path`; `level_tiles(k)` yields level k's tiles row by row."""
    bigtiff = estimated_bytes > BIGTIFF_THRESHOLD
    meta = plan.meta
    icc = [(34675, 7, len(meta.icc_profile), meta.icc_profile, True)] if meta.icc_profile else []
    with tifffile.TiffWriter(path, bigtiff=bigtiff) as tif:
        for shape, codec in zip(plan.levels, plan.codecs, strict=True):
            if plan.aperio:
                description = (
                    aperio_level0_description(meta, plan.tile, plan.quality)
                    if shape.level == 0
                    else aperio_reduced_description(meta, shape.width, shape.height, plan.tile, plan.quality)
                )
            else:
                description = None
            resolution = resolution_per_cm(meta.mpp_x) if not plan.aperio else None
            kwargs: dict[str, object] = {}
            if resolution and meta.mpp_y:
                kwargs["resolution"] = (
                    (resolution[0] >> shape.level, resolution[1]),
                    (round(10_000_000 / meta.mpp_y) >> shape.level, 1000),
                )
                kwargs["resolutionunit"] = "CENTIMETER"
            if codec.rgb_samples:
                kwargs["subsampling"] = (1, 1)
                kwargs["compressionargs"] = {"outcolorspace": "RGB"}
            else:
                kwargs["subsampling"] = codec.subsampling
            tif.write(
                level_tiles(shape.level),
                shape=(shape.height, shape.width, 3),
                dtype=np.uint8,
                tile=(plan.tile, plan.tile),
                compression="jpeg",
                photometric=codec.photometric,
                jpegtables=codec.jpegtables,
                subfiletype=0 if shape.level == 0 or plan.aperio else 1,
                description=description,
                metadata=None,
                software=False,
                extratags=icc if shape.level == 0 else [],
                **kwargs,  # type: ignore[arg-type]
            )
            if plan.aperio and shape.level == 0 and thumbnail is not None:
                tif.write(
                    thumbnail,
                    photometric="rgb",
                    compression="lzw",
                    description=aperio_thumbnail_description(meta, thumbnail.shape[1], thumbnail.shape[0]),
                    metadata=None,
                    software=False,
                )
        if plan.aperio:
            for name, image in associated:
                tif.write(
                    image,
                    photometric="rgb",
                    compression="lzw",
                    subfiletype=1 if name == "label" else 9,
                    description=aperio_associated_description(name, image.shape[1], image.shape[0]),
                    metadata=None,
                    software=False,
                )


def make_thumbnail(top: np.ndarray, max_side: int = 768) -> np.ndarray:
    """The regenerated thumbnail: the top pyramid level, scaled down to at most `max_side`."""
    h, w = top.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return np.ascontiguousarray(top)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(top, size, interpolation=cv2.INTER_AREA)
