"""Synthetic whole-slide images for tests and the benchmark, written with tifffile.

Slides are small textured "tissue" on white, with optional dark text drawn across a tile corner at
level 0, an Aperio-style description full of PHI, a label and a macro with PHI text, and TIFF text
tags. Every PHI string is listed in `PHI_STRINGS` so tests can search output bytes for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile

PHI_NAME = "DOE^JANE"
PHI_FILENAME = "JaneDoe-S12-34567"
PHI_BARCODE = "BC-98765-PHI"
PHI_USER = "pathologist-jsmith"
PHI_HOST = "scanner-ward7-host"
PHI_DATE = "2021:03:04 05:06:07"
PHI_STRINGS = (PHI_NAME, PHI_FILENAME, PHI_BARCODE, PHI_USER, PHI_HOST, "ward7", "JaneDoe", "jsmith")
TEXT = "MRN 123456"


@dataclass(frozen=True)
class TextPlacement:
    """Where the burned-in text was drawn, in level-0 pixels."""

    x: int
    y: int
    width: int
    height: int


def tissue(width: int, height: int, seed: int = 7, x0: int = 0, y0: int = 0, step: int = 1) -> np.ndarray:
    """Deterministic smooth pink texture: the same pixels for the same area whatever the chunking.

    `step` samples every step-th level-0 pixel (a cheap stand-in for a downsampled level).
    """
    yy, xx = np.mgrid[y0 : y0 + height * step : step, x0 : x0 + width * step : step].astype(np.float32)
    base = (
        np.sin(xx / 37.0 + seed) * np.cos(yy / 23.0) * 0.5
        + np.sin((xx + yy) / 71.0) * 0.3
        + np.cos(xx / 9.0 - yy / 13.0) * 0.2
    )
    # deterministic grain so JPEG tiles have realistic sizes (a few tens of KB per 512 px tile)
    grain = ((xx.astype(np.int64) * 73856093 ^ yy.astype(np.int64) * 19349663) % 23).astype(np.float32) / 23.0 - 0.5
    base = base + 0.25 * grain
    r = 225 + 25 * base
    g = 170 + 45 * base
    b = 205 + 30 * base
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def draw_text(image: np.ndarray, x: int, y: int, text: str = TEXT, scale: float = 1.6) -> TextPlacement:
    thickness = 3
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    cv2.putText(image, text, (x, y + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (10, 10, 10), thickness, cv2.LINE_AA)
    return TextPlacement(x, y, tw, th + base)


def level0_image(
    width: int, height: int, text_corner: tuple[int, int] | None, text: str = TEXT
) -> tuple[np.ndarray, TextPlacement | None]:
    image = tissue(width, height)
    placement = None
    if text_corner is not None:
        cx, cy = text_corner
        # centred on the corner so it crosses four tiles
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 1.6, 3)
        placement = draw_text(image, cx - tw // 2, cy - th // 2, text)
    return image, placement


def label_image(text: str = PHI_NAME) -> np.ndarray:
    image = np.full((200, 240, 3), 250, np.uint8)
    draw_text(image, 10, 40, text[:12], scale=0.8)
    draw_text(image, 10, 120, PHI_BARCODE[:12], scale=0.8)
    return image


def macro_image() -> np.ndarray:
    image = np.full((160, 480, 3), 240, np.uint8)
    image[:, 160:] = tissue(320, 160)
    draw_text(image, 5, 40, "JANE", scale=0.8)
    return image


def _pyramid(image: np.ndarray, downsamples: tuple[int, ...]) -> list[np.ndarray]:
    out = []
    for d in downsamples:
        if d == 1:
            out.append(image)
        else:
            h, w = image.shape[:2]
            out.append(cv2.resize(image, (-(-w // d), -(-h // d)), interpolation=cv2.INTER_AREA))
    return out


def aperio_description(width: int, height: int, tile: int) -> str:
    return (
        f"Aperio Image Library v11.2.1 \r\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) JPEG/RGB Q=70"
        f"|AppMag = 20|StripeWidth = 2040|ScanScope ID = {PHI_HOST}|Filename = {PHI_FILENAME}|Date = 03/04/21"
        f"|Time = 05:06:07|User = {PHI_USER}|Barcode = {PHI_BARCODE}|Title = {PHI_NAME}|DSR ID = {PHI_HOST}"
        "|MPP = 0.4990"
    )


def write_aperio_svs(
    path: Path,
    width: int = 1024,
    height: int = 768,
    tile: int = 256,
    text_corner: tuple[int, int] | None = (512, 256),
    downsamples: tuple[int, ...] = (1, 4),
    label: bool = True,
    macro: bool = True,
    photometric: str = "rgb",
    text: str = TEXT,
) -> TextPlacement | None:
    """An Aperio-style SVS: JPEG tiles, a thumbnail, label (LZW) and macro (JPEG), PHI in descriptions."""
    image, placement = level0_image(width, height, text_corner, text)
    levels = _pyramid(image, downsamples)
    desc = aperio_description(width, height, tile)
    with tifffile.TiffWriter(path) as tif:
        for index, level in enumerate(levels):
            tif.write(
                level,
                tile=(tile, tile),
                compression="jpeg",
                compressionargs={"level": 80},
                photometric=photometric,
                description=desc
                if index == 0
                else desc.replace(f"{width}x{height} [", f"{width}x{height} -> {level.shape[1]}x{level.shape[0]} - ["),
                metadata=None,
                software=False,
                extratags=[(315, 2, 0, PHI_USER, True)] if index == 0 else [],
            )
            if index == 0:
                thumb = cv2.resize(image, (max(1, width // 8), max(1, height // 8)), interpolation=cv2.INTER_AREA)
                tif.write(
                    thumb,
                    compression="jpeg",
                    photometric="rgb",
                    description=desc.split("|")[0]
                    + f" -> {thumb.shape[1]}x{thumb.shape[0]} - |Filename = {PHI_FILENAME}",
                    metadata=None,
                    software=False,
                )
        if label:
            tif.write(
                label_image(),
                compression="lzw",
                photometric="rgb",
                subfiletype=1,
                description=f"Aperio Image Library v11.2.1 \r\nlabel 240x200|Barcode = {PHI_BARCODE}",
                metadata=None,
                software=False,
            )
        if macro:
            tif.write(
                macro_image(),
                compression="jpeg",
                photometric="rgb",
                subfiletype=9,
                description="Aperio Image Library v11.2.1 \r\nmacro 480x160",
                metadata=None,
                software=False,
            )
    return placement


def write_generic_tiff(
    path: Path,
    width: int = 1024,
    height: int = 768,
    tile: int = 256,
    text_corner: tuple[int, int] | None = (512, 256),
    downsamples: tuple[int, ...] = (1, 2, 4),
    compression: str = "jpeg",
) -> TextPlacement | None:
    """A generic tiled pyramidal TIFF whose text tags and XMP carry PHI."""
    image, placement = level0_image(width, height, text_corner)
    levels = _pyramid(image, downsamples)
    xmp = f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><dc:creator>{PHI_NAME}</dc:creator></x:xmpmeta>'.encode()
    tags = [
        (315, 2, 0, PHI_USER, True),  # Artist
        (269, 2, 0, PHI_FILENAME, True),  # DocumentName
        (316, 2, 0, PHI_HOST, True),  # HostComputer
        (306, 2, 0, PHI_DATE, True),  # DateTime
        (700, 1, len(xmp), xmp, True),  # XMP
    ]
    with tifffile.TiffWriter(path) as tif:
        for index, level in enumerate(levels):
            tif.write(
                level,
                tile=(tile, tile),
                compression=compression,
                compressionargs={"level": 80} if compression == "jpeg" else None,
                photometric="rgb",
                subfiletype=0 if index == 0 else 1,
                description=f"Patient {PHI_NAME} slide {PHI_FILENAME}" if index == 0 else None,
                resolution=((20000, 1), (20000, 1)),
                resolutionunit="CENTIMETER",
                metadata=None,
                software=False,
                extratags=tags if index == 0 else [],
            )
    return placement


def write_big_svs(path: Path, side: int, tile: int = 512, quality: int = 80) -> None:
    """A large Aperio-style SVS written tile by tile (bounded memory), levels 1, 4, 16 ..."""
    desc = aperio_description(side, side, tile)

    def tiles(size: int, step: int) -> Iterator[np.ndarray]:
        for y in range(0, size, tile):
            for x in range(0, size, tile):
                yield tissue(tile, tile, x0=x * step, y0=y * step, step=step)

    with tifffile.TiffWriter(path, bigtiff=side * side * 3 > 3 * 1024**3) as tif:
        step = 1
        while True:
            size = -(-side // step)
            tif.write(
                tiles(size, step),
                shape=(size, size, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                compression="jpeg",
                compressionargs={"level": quality},
                photometric="rgb",
                description=desc if step == 1 else desc.split("|")[0] + f" -> {size}x{size} - |AppMag = 20|MPP = 0.499",
                metadata=None,
                software=False,
            )
            if size <= tile * 2:
                break
            step *= 4
