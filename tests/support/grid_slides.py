"""Slides whose JPEG tiles sit on a regular grid, in each vendor's layout as OpenSlide reads it.

Leica SCN (a main image inside a larger collection, at an offset), Ventana BIF (iScan XMP, EncodeInfo
with zero tile overlaps), Philips TIFF (DPUfsImport XML, reduced levels padded to whole tiles, tiles
that may be missing) and a generic pyramid with one level that carries text no other level has.
Written with tifffile; OpenSlide's format notes and drivers describe what each must hold. Imported
as `from tests.support import grid_slides`; it holds no tests itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pydicom
import tifffile

from tests.support.wsi_factory import draw_text, tissue

MPP = 0.25


def pyramid(image: np.ndarray, count: int, factor: int = 2) -> list[np.ndarray]:
    """`image` and `count - 1` reductions by `factor` (area averaging, sizes rounded up)."""
    levels = [image]
    for _ in range(1, count):
        h, w = levels[-1].shape[:2]
        levels.append(cv2.resize(levels[-1], (-(-w // factor), -(-h // factor)), interpolation=cv2.INTER_AREA))
    return levels


def _jpeg(tif: tifffile.TiffWriter, image: np.ndarray, tile: int, **kwargs: object) -> None:
    tif.write(
        image,
        tile=(tile, tile),
        compression="jpeg",
        compressionargs={"level": 85},
        photometric="ycbcr",
        subsampling=(2, 2),
        metadata=None,
        software=False,
        **kwargs,  # type: ignore[arg-type]
    )


def write_leica_scn(
    path: Path, width: int = 1024, height: int = 768, tile: int = 256, offset: tuple[int, int] = (512, 512)
) -> np.ndarray:
    """A Leica SCN: a macro and one brightfield main image of three levels (1, 2, 4) placed at `offset`
    (level-0 pixels) inside a collection 1024 pixels wider and taller. Returns the main image."""
    nm = int(MPP * 1000)
    image = tissue(width, height, seed=11)
    levels = pyramid(image, 3)
    cw, ch = width + 1024, height + 1024
    dims = "".join(
        f'<dimension sizeX="{lv.shape[1]}" sizeY="{lv.shape[0]}" r="{i}" ifd="{i + 1}"/>' for i, lv in enumerate(levels)
    )
    settings = (
        "<scanSettings><objectiveSettings><objective>40</objective></objectiveSettings>"
        "<illuminationSettings><illuminationSource>brightfield</illuminationSource></illuminationSettings>"
        "</scanSettings>"
    )
    xml = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<scn xmlns="http://www.leica-microsystems.com/scn/2010/10/01">'
        f'<collection name="collection" uuid="urn:uuid:00000000-0000-0000-0000-000000000001" '
        f'sizeX="{cw * nm}" sizeY="{ch * nm}">'
        '<image name="macro" uuid="urn:uuid:00000000-0000-0000-0000-000000000002">'
        '<device model="Leica SCN400;Leica SCN" version="1.5"/>'
        '<pixels sizeX="512" sizeY="256"><dimension sizeX="512" sizeY="256" r="0" ifd="0"/></pixels>'
        f'<view sizeX="{cw * nm}" sizeY="{ch * nm}" offsetX="0" offsetY="0" spacingZ="0"/>{settings}</image>'
        '<image name="main" uuid="urn:uuid:00000000-0000-0000-0000-000000000003">'
        '<device model="Leica SCN400;Leica SCN" version="1.5"/>'
        f'<pixels sizeX="{width}" sizeY="{height}">{dims}</pixels>'
        f'<view sizeX="{width * nm}" sizeY="{height * nm}" offsetX="{offset[0] * nm}" offsetY="{offset[1] * nm}" '
        f'spacingZ="0"/>{settings}</image>'
        "</collection></scn>"
    )
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        _jpeg(tif, np.full((256, 512, 3), 235, np.uint8), 128, description=xml)
        for index, level in enumerate(levels):
            per_cm = 10_000 / (MPP * 2**index)
            _jpeg(tif, level, tile, resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
    return image


def write_ventana_bif(
    path: Path, width: int = 1024, height: int = 1024, tile: int = 256, overlap: int = 0
) -> np.ndarray:
    """A Ventana BIF: label, thumbnail and three levels (magnification 40, 20, 10); level 0's
    EncodeInfo lays its tiles edge to edge (every joint has zero overlap) unless `overlap` says how
    many pixels neighbouring tiles share, which OpenSlide turns into a fractional tile advance.
    Sizes are whole tiles."""
    image = tissue(width, height, seed=5)
    levels = pyramid(image, 3)
    cols, rows = width // tile, height // tile
    iscan = (
        b'<iScan Magnification="40" ScanRes="0.25" Z-layers="1" ScannerModel="VENTANA DP 200" '
        b'BuildVersion="1.0"><AOI0 AOIScanned="1" Left="0" Top="0" Right="10" Bottom="10"/></iScan>'
    )
    joints = (
        f'<TileJointInfo FlagJoined="1" Direction="RIGHT" Tile1="1" Tile2="2" OverlapX="{overlap}" OverlapY="0" '
        'Confidence="100"/>'
        f'<TileJointInfo FlagJoined="1" Direction="UP" Tile1="1" Tile2="{2 * cols}" OverlapX="0" '
        f'OverlapY="{overlap}" Confidence="100"/>'
    )
    encode = (
        '<EncodeInfo Ver="2"><SlideStitchInfo>'
        f'<ImageInfo AOIScanned="1" AOIIndex="0" Width="{tile}" Height="{tile}" NumRows="{rows}" NumCols="{cols}" '
        f'Pos-X="0" Pos-Y="0">{joints}</ImageInfo>'
        '</SlideStitchInfo><AoiOrigin><AOI0 OriginX="0" OriginY="0"/></AoiOrigin></EncodeInfo>'
    ).encode()
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(
            np.full((200, 400, 3), 240, np.uint8),
            photometric="rgb",
            description="Label Image",
            metadata=None,
            software=False,
            extratags=[(700, 1, len(iscan), iscan, True)],
        )
        tif.write(
            cv2.resize(image, (128, 128), interpolation=cv2.INTER_AREA),
            photometric="rgb",
            description="Thumbnail",
            metadata=None,
            software=False,
        )
        for index, level in enumerate(levels):
            extratags = [(700, 1, len(encode), encode, True)] if index == 0 else []
            _jpeg(tif, level, tile, description=f"level={index} mag={40 >> index} quality=95", extratags=extratags)
    return image


def philips_xml(levels: int) -> str:
    spacing = "".join(
        '<DataObject ObjectType="PixelDataRepresentation">'
        f'<Attribute Name="DICOM_PIXEL_SPACING" Group="0x0028" Element="0x0030" PMSVR="IDoubleArray">'
        f'"{MPP / 1000 * 2**i:g}" "{MPP / 1000 * 2**i:g}"</Attribute>'
        f'<Attribute Name="PIIM_PIXEL_DATA_REPRESENTATION_NUMBER" Group="0x101D" Element="0x1009" PMSVR="IUInt16">'
        f"{i}</Attribute></DataObject>"
        for i in range(levels)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8" ?><DataObject ObjectType="DPUfsImport">'
        '<Attribute Name="DICOM_MANUFACTURER" Group="0x0008" Element="0x0070" PMSVR="IString">PHILIPS</Attribute>'
        '<Attribute Name="PIM_DP_SCANNED_IMAGES" Group="0x301D" Element="0x1003" PMSVR="IDataObjectArray"><Array>'
        '<DataObject ObjectType="DPScannedImage">'
        '<Attribute Name="PIM_DP_IMAGE_TYPE" Group="0x301D" Element="0x1004" PMSVR="IString">WSI</Attribute>'
        '<Attribute Name="DICOM_PIXEL_SPACING" Group="0x0028" Element="0x0030" PMSVR="IDoubleArray">'
        f'"{MPP / 1000:g}" "{MPP / 1000:g}"</Attribute>'
        '<Attribute Name="PIIM_PIXEL_DATA_REPRESENTATION_SEQUENCE" Group="0x1001" Element="0x8B01" '
        f'PMSVR="IDataObjectArray"><Array>{spacing}</Array></Attribute>'
        "</DataObject></Array></Attribute></DataObject>"
    )


def write_philips_tiff(
    path: Path, width: int = 1024, height: int = 768, tile: int = 256, missing: tuple[int, ...] = ()
) -> np.ndarray:
    """A Philips TIFF of three levels, each page padded to whole tiles with white (as Philips does, so
    OpenSlide clips reduced levels to level 0 / downsample); level-0 tiles listed in `missing` are
    left out (byte count 0), which OpenSlide shows as transparent. Returns level 0."""
    image = tissue(width, height, seed=3)
    levels = pyramid(image, 3)
    with tifffile.TiffWriter(path, bigtiff=False) as tif:
        for index, level in enumerate(levels):
            h, w = level.shape[:2]
            padded = np.full((-(-h // tile) * tile, -(-w // tile) * tile, 3), 255, np.uint8)
            padded[:h, :w] = level
            _jpeg(
                tif,
                padded,
                tile,
                description=philips_xml(len(levels)) if index == 0 else None,
                subfiletype=0 if index == 0 else 1,
                extratags=[(305, 2, 0, "Philips DP v1.0", True)] if index == 0 else [],
            )
    if missing:
        _drop_tiles(path, 0, missing)
    return image


def _drop_tiles(path: Path, page_index: int, tiles: tuple[int, ...]) -> None:
    """Set the byte count (and offset) of some tiles of a page to 0 in place: sparse tiles."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[page_index]
        counts_tag = page.tags["TileByteCounts"]  # type: ignore[union-attr]
        offsets_tag = page.tags["TileOffsets"]  # type: ignore[union-attr]
        byteorder = tif.byteorder
        items = []
        for tag in (counts_tag, offsets_tag):
            size = np.dtype(tifffile.TIFF.DATA_FORMATS[tag.dtype]).itemsize
            items.append((tag.valueoffset, size))
    with open(path, "r+b") as handle:
        for valueoffset, size in items:
            for index in tiles:
                handle.seek(valueoffset + index * size)
                handle.write((0).to_bytes(size, "little" if byteorder == "<" else "big"))


def write_text_in_reduced_level(
    path: Path, width: int = 1024, height: int = 1024, tile: int = 256
) -> tuple[int, int, int, int]:
    """A generic JPEG pyramid (1, 2, 4) whose level 1 alone carries dark text: level 0 and level 2 are
    clean tissue. Returns the text's box (x, y, width, height) in level-1 pixels."""
    image = tissue(width, height, seed=9)
    levels = pyramid(image, 3)
    text = draw_text(levels[1], 150, 200, "MRN 654321", scale=1.2)
    with tifffile.TiffWriter(path) as tif:
        for index, level in enumerate(levels):
            tif.write(
                level,
                tile=(tile, tile),
                compression="jpeg",
                compressionargs={"level": 90},
                photometric="rgb",
                subfiletype=0 if index == 0 else 1,
                resolution=((40000, 1), (40000, 1)),
                resolutionunit="CENTIMETER",
                metadata=None,
                software=False,
            )
    return (text.x, text.y, text.width, text.height)


def write_dicom_wsi(folder: Path, width: int = 1024, height: int = 768, tile: int = 256) -> list[Path]:
    """A DICOM VL Whole Slide series (TILED_FULL, JPEG Baseline YCbCr 4:2:0 frames), one instance per
    level (1, 2, 4), written with the pipeline's own DICOM writer. Returns the instance paths."""
    from deid.wsi import jpeg
    from deid.wsi.dicom_writer import DicomPlan, write_level
    from deid.wsi.grid import TileGrid
    from deid.wsi.metadata import SlideMetadata
    from deid.wsi.tiles import LevelCodec

    image = tissue(width, height, seed=13)
    grid = TileGrid(width, height, tile, 0, 3)
    shapes = grid.levels()
    codecs = tuple(LevelCodec(subsampling=(2, 2)) for _ in shapes)
    plan = DicomPlan(SlideMetadata(width, height, "dicom", MPP, MPP), shapes, codecs, tile, "SYNTHETIC", 85)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for shape, level in zip(shapes, pyramid(image, len(shapes)), strict=True):

        def frames(level: np.ndarray = level) -> Iterator[bytes]:
            for row in range(-(-level.shape[0] // tile)):
                for col in range(-(-level.shape[1] // tile)):
                    block = np.full((tile, tile, 3), 255, np.uint8)
                    part = level[row * tile : (row + 1) * tile, col * tile : (col + 1) * tile]
                    block[: part.shape[0], : part.shape[1]] = part
                    yield jpeg.encode(block, 85, (2, 2))

        path = folder / f"instance{shape.level}.dcm"
        write_level(str(path), plan, shape, frames(), _uid)
        # A scanner's own dates (the writer's placeholder would match the output's and count as a leak).
        ds = pydicom.dcmread(path)
        ds.StudyDate = ds.ContentDate = "20200102"
        ds.AcquisitionDateTime = "20200102030405"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _uid(purpose: str) -> str:
    return "2.25." + str(int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:12], "big"))
