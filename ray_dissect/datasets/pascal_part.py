"""PASCAL-Part annotation decoding: ``.mat`` -> object and part label masks (issue 12).

**File format** (design/visual.md §4.3): ``loadmat(path)['anno']`` holds ``imname`` and
``objects``; each object has ``class`` (VOC name), ``class_ind`` (1-20, VOC order), ``mask``
(H, W) uint8 and ``parts`` (possibly empty); each part has ``part_name`` and ``mask``. Fields
are read BY NAME through accessors that accept every ``scipy.io.loadmat`` variant
(``squeeze_me`` on/off, ``struct_as_record`` on/off, one-element and empty struct arrays).

**Part grouping.** Fine part names and, for each class, which names carry an instance number
come from the dataset's own ``part2ind.m`` (PASCAL-Part trainval.tar.gz; copy read at
CSAILVision/unifiedparsing ``meta_file/pascal/part2ind.m``). That file gives every fine part
its own index and says parts are merged by giving them one index; it ships no merged map.
``PART_MAP`` applies the merge commonly used with it, as in the merged ``part2ind`` variants
that follow Gonzalez-Garcia et al., "Do semantic parts emerge in CNNs?" (IJCV 2018):
left/right, front/back and upper/lower variants fold into one part (``lfleg``, ``rbleg``,
``luleg`` -> ``leg``; ``lear``, ``rear`` -> ``ear``; ``lfho`` -> ``hoof``), and numbered
instances fold into their family (``wheel_1`` -> ``wheel``, ``door_3`` -> ``door``,
``coach_2`` -> ``coach``). The bus/car/train faces (front/left/right/back side) become
``side``; the roofs become ``roof``, ``head roof`` and ``coach roof``. Every grouped name is
spelled as in Broden's part list (CSAILVision/unifiedparsing ``meta_file/part.csv``), e.g.
``license plate``, ``handle bar``, ``chain wheel``, ``eyebrow``. This is NOT the seed's
``split('_')``, which kept left and right apart. ``part2ind.m`` numbers instances up to 10
(windows 20); a higher number of a family the class has (``window_23`` of a car) joins that
family. Any other unknown name is reported in ``LabelMasks.problems`` and left out, never
guessed.

**Concept names.** Parts are named by the part alone (``"leg"``, not ``"person-leg"``), as in
Broden: NetDissect's part category shares names across objects. The owner is already in the
object category, and per-object names would split scarce parts below the minimum frequency.

**Occlusion.** The objects are drawn in file order, so later objects cover earlier ones. This
is the order of PASCAL-Part's own ``mat2map.m``. Each object's parts are drawn in file order,
but only on pixels where that object is still visible. ``mat2map.m`` instead leaves an
occluded object's parts in its part map.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ray_dissect import storage
from ray_dissect.datasets.base import BadSampleError
from ray_dissect.errors import SpecError
from ray_dissect.storage import AnyPath

logger = logging.getLogger(__name__)

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


class BadAnnotation(BadSampleError):
    """A PASCAL-Part file that cannot be decoded (one-line reason); its sample is skipped."""


def _numbered(base: str, count: int, group: str) -> dict[str, str]:
    """``{base_1: group, ..., base_count: group}``, as part2ind.m's ``sprintf`` loops."""
    return {f"{base}_{i}": group for i in range(1, count + 1)}


def _same(*names: str) -> dict[str, str]:
    """Parts whose grouped name is the fine name."""
    return {name: name for name in names}


_EYES_EARS = {"leye": "eye", "reye": "eye", "lear": "ear", "rear": "ear"}
_FACES = {"frontside": "side", "leftside": "side", "rightside": "side", "backside": "side",
          "roofside": "roof"}
_VEHICLE = {
    **_FACES, "leftmirror": "mirror", "rightmirror": "mirror",
    "fliplate": "license plate", "bliplate": "license plate",
    **_numbered("door", 10, "door"), **_numbered("wheel", 10, "wheel"),
    **_numbered("headlight", 10, "headlight"), **_numbered("window", 20, "window"),
}
_PET = {
    **_same("head", "nose", "torso", "neck", "tail"), **_EYES_EARS,
    **{f"{s}leg": "leg" for s in ("lf", "rf", "lb", "rb")},
    **{f"{s}pa": "paw" for s in ("lf", "rf", "lb", "rb")},
}
_UNGULATE = {
    **_same("head", "muzzle", "torso", "neck", "tail"), **_EYES_EARS,
    **{f"{s}{ul}leg": "leg" for s in ("lf", "rf", "lb", "rb") for ul in ("u", "l")},
}
_HORNS = {"lhorn": "horn", "rhorn": "horn"}
_HOOVES = {f"{s}ho": "hoof" for s in ("lf", "rf", "lb", "rb")}
_TWO_WHEELER = {"fwheel": "wheel", "bwheel": "wheel", "handlebar": "handle bar",
                "saddle": "saddle", **_numbered("headlight", 10, "headlight")}
_TRAIN_FACES = {f"h{face}": ("head roof" if face == "roofside" else "side") for face in _FACES}
_COACH_FACES = {f"c{face}_{i}": ("coach roof" if face == "roofside" else "side")
                for face in _FACES for i in range(1, 11)}

PART_MAP: dict[str, dict[str, str]] = {
    "aeroplane": {**_same("body", "stern", "tail"), "lwing": "wing", "rwing": "wing",
                  **_numbered("engine", 10, "engine"), **_numbered("wheel", 10, "wheel")},
    "bicycle": {**_TWO_WHEELER, "chainwheel": "chain wheel"},
    "bird": {**_same("head", "beak", "torso", "neck", "tail"), "leye": "eye", "reye": "eye",
             "lwing": "wing", "rwing": "wing", "lleg": "leg", "rleg": "leg",
             "lfoot": "foot", "rfoot": "foot"},
    "boat": {},
    "bottle": _same("cap", "body"),
    "bus": dict(_VEHICLE),
    "car": dict(_VEHICLE),
    "cat": dict(_PET),
    "chair": {},
    "cow": {**_UNGULATE, **_HORNS},
    "diningtable": {},
    "dog": {**_PET, "muzzle": "muzzle"},
    "horse": {**_UNGULATE, **_HOOVES},
    "motorbike": dict(_TWO_WHEELER),
    "person": {
        **_same("head", "nose", "mouth", "hair", "torso", "neck"), **_EYES_EARS,
        "lebrow": "eyebrow", "rebrow": "eyebrow",
        **{f"{s}{ul}arm": "arm" for s in ("l", "r") for ul in ("u", "l")},
        **{f"{s}{ul}leg": "leg" for s in ("l", "r") for ul in ("u", "l")},
        "lhand": "hand", "rhand": "hand", "lfoot": "foot", "rfoot": "foot",
    },
    "pottedplant": _same("pot", "plant"),
    "sheep": {**_UNGULATE, **_HORNS},
    "sofa": {},
    "train": {"head": "head", **_TRAIN_FACES, **_numbered("headlight", 10, "headlight"),
              **_numbered("coach", 10, "coach"), **_COACH_FACES},
    "tvmonitor": {"screen": "screen"},
}
"""{VOC class: {fine part name: grouped part name}}; classes without parts map to {}."""

PART_NAMES: tuple[str, ...] = tuple(sorted({g for parts in PART_MAP.values()
                                            for g in parts.values()}))
"""Grouped part names, sorted; part id = index + 1 (0 = no part)."""

_NUMBERED = re.compile(r"^(?P<base>[a-z]+)_(?P<num>[1-9][0-9]*)$")


def concept_vocabulary() -> tuple[tuple[str, str], ...]:
    """The concepts this decoder can emit, as sorted (category, name) pairs.

    Returns:
        ``("object", class)`` for the 20 VOC classes (ids 1-20, VOC order = alphabetical),
        then ``("part", name)`` for each of ``PART_NAMES`` (ids 1..P in that order).
    """
    return tuple([("object", c) for c in sorted(VOC_CLASSES)]
                 + [("part", p) for p in PART_NAMES])


def group_part(class_name: str, part_name: str) -> str | None:
    """The grouped part name for a fine PASCAL-Part name, or None when unknown.

    Args:
        class_name: VOC class of the owning object, e.g. ``"car"``.
        part_name: fine name as in the file, e.g. ``"wheel_3"`` or ``"lfleg"``.

    Returns:
        e.g. ``"wheel"`` or ``"leg"``; a number past part2ind.m's loop bound joins its family
        if the class has that family (``window_23`` of a car -> ``window``).
    """
    table = PART_MAP.get(class_name, {})
    if part_name in table:
        return table[part_name]
    match = _NUMBERED.match(part_name)
    if match is None:
        return None
    return table.get(f"{match['base']}_1")


@dataclass(frozen=True)
class PascalPart:
    """One part: its fine name and (H, W) bool mask."""

    name: str
    mask: np.ndarray


@dataclass(frozen=True)
class PascalObject:
    """One object: VOC class, class_ind (1-20), (H, W) bool mask and its parts in file order."""

    class_name: str
    class_ind: int
    mask: np.ndarray
    parts: tuple[PascalPart, ...]


@dataclass(frozen=True)
class Annotation:
    """A decoded file: image name ('' if absent), (H, W) size and objects in file order."""

    imname: str
    shape: tuple[int, int]
    objects: tuple[PascalObject, ...]


@dataclass(frozen=True)
class LabelMasks:
    """Label masks of one image.

    Attributes:
        object: (H, W) int32 VOC class id (1-20), 0 = background.
        part: (H, W) int32 part id (index into PART_NAMES + 1), 0 = no part.
        problems: one line per part that was left out (unknown name).
    """

    object: np.ndarray
    part: np.ndarray
    problems: tuple[str, ...]

    def categories(self) -> dict[str, list[np.ndarray]]:
        """Broden-style {category: list of (H, W) int32 label layers} (one layer each)."""
        return {"object": [self.object], "part": [self.part]}


def _unwrap(node: Any) -> Any:
    """Strip one-element and 0-d wrappers that loadmat puts around values and structs."""
    while isinstance(node, np.ndarray) and node.size == 1 and (
        node.dtype == object or node.dtype.names is not None
    ):
        node = node.reshape(())[()]
    return node


def _field(node: Any, name: str, where: str) -> Any:
    """A struct field by name, for record (np.void) and mat_struct loadmat variants."""
    node = _unwrap(node)
    names = getattr(getattr(node, "dtype", None), "names", None)
    if names is not None and name in names:
        return node[name]
    if name in (getattr(node, "_fieldnames", None) or ()):
        return getattr(node, name)
    if isinstance(node, Mapping) and name in node:
        return node[name]
    raise BadAnnotation(f"{where} has no field {name!r}")


def _elements(node: Any) -> list[Any]:
    """The structs of a struct array of any shape (empty -> [], single struct -> [it])."""
    node = _unwrap(node)
    if isinstance(node, np.ndarray):
        if node.dtype.names is not None or node.dtype == object:
            return [_unwrap(x) for x in node.reshape(-1)]
        if node.size == 0:
            return []
        raise BadAnnotation(f"expected a struct array, got {node.dtype} {node.shape}")
    return [node]


def _text(node: Any, where: str) -> str:
    """A MATLAB char array (possibly wrapped) as str."""
    node = _unwrap(node)
    if isinstance(node, np.ndarray) and node.dtype.kind == "U" and node.size == 1:
        node = node.reshape(-1)[0]
    elif isinstance(node, np.ndarray) and node.dtype == "<U1" and node.squeeze().ndim == 1:
        node = "".join(node.reshape(-1))  # loadmat(chars_as_strings=False): one char per cell
    if not isinstance(node, str) or not node:
        raise BadAnnotation(f"{where} is not a non-empty string")
    return node.strip()


def _integer(node: Any, where: str) -> int:
    """A MATLAB scalar (possibly wrapped) as int."""
    value = np.asarray(_unwrap(node))
    if value.size != 1 or value.dtype.kind not in "iuf":
        raise BadAnnotation(f"{where} is not a scalar number")
    return int(value.reshape(-1)[0])


def _mask(node: Any, shape: tuple[int, int] | None, where: str) -> np.ndarray:
    """A 2-D mask as (H, W) bool, checked against the image shape when known."""
    mask = np.asarray(_unwrap(node))
    if mask.ndim != 2 or mask.dtype.kind not in "biuf" or 0 in mask.shape:
        raise BadAnnotation(f"{where} mask is not a 2-D numeric array (got {mask.shape})")
    if shape is not None and mask.shape != shape:
        raise BadAnnotation(f"{where} mask has shape {mask.shape}, expected {shape}")
    return mask > 0


def _object(node: Any, shape: tuple[int, int] | None, where: str) -> PascalObject:
    """One object struct -> PascalObject, checking class, class_ind and mask shapes."""
    name = _text(_field(node, "class", where), f"{where}.class")
    ind = _integer(_field(node, "class_ind", where), f"{where}.class_ind")
    if name not in VOC_CLASSES or VOC_CLASSES.index(name) + 1 != ind:
        raise BadAnnotation(f"{where}: class {name!r} with class_ind {ind} is not a VOC pair")
    mask = _mask(_field(node, "mask", where), shape, where)
    parts = tuple(
        PascalPart(_text(_field(p, "part_name", f"{where}.part{j}"), f"{where}.part{j}.name"),
                   _mask(_field(p, "mask", f"{where}.part{j}"), mask.shape, f"{where}.part{j}"))
        for j, p in enumerate(_elements(_field(node, "parts", where)))
    )
    return PascalObject(name, ind, mask, parts)


def parse_annotation(mat: Mapping[str, Any]) -> Annotation:
    """Decode the dict returned by ``scipy.io.loadmat`` (any squeeze/struct variant).

    Raises:
        BadAnnotation: missing ``anno``/fields, no objects, non-VOC class, masks of
            different shapes.
    """
    if "anno" not in mat:
        raise BadAnnotation("no 'anno' variable in the .mat file")
    anno = mat["anno"]
    try:
        imname = _text(_field(anno, "imname", "anno"), "anno.imname")
    except BadAnnotation:
        imname = ""
    nodes = _elements(_field(anno, "objects", "anno"))
    if not nodes:
        raise BadAnnotation("anno.objects is empty, so the mask size is unknown")
    first = _object(nodes[0], None, "object0")
    shape: tuple[int, int] = (int(first.mask.shape[0]), int(first.mask.shape[1]))
    rest = [_object(n, shape, f"object{i}") for i, n in enumerate(nodes[1:], start=1)]
    return Annotation(imname, shape, (first, *rest))


def read_annotation(path: str | Path | AnyPath) -> Annotation:
    """Load and decode one PASCAL-Part ``.mat`` file (a local path or an fsspec URI).

    Raises:
        BadAnnotation: missing or not a readable .mat file, or any reason of
            :func:`parse_annotation`; the message starts with the file's name.
    """
    from scipy.io import loadmat  # scipy.io is slow to import; only readers need it
    from scipy.io.matlab import MatReadError

    where = storage.location(path)
    unreadable = (OSError, ValueError, TypeError, EOFError, IndexError, NotImplementedError,
                  MatReadError, zlib.error, MemoryError)  # IndexError: a 5-127 byte header
    try:
        mat = loadmat(storage.readable(where))
    except unreadable as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise BadAnnotation(f"{where.name} is not a readable .mat file: {reason}") from None
    try:
        return parse_annotation(mat)
    except BadAnnotation as error:
        raise BadAnnotation(f"{where.name}: {error}") from None


def decode(annotation: Annotation) -> LabelMasks:
    """Draw object and part label masks with PASCAL-Part's occlusion order.

    Objects are drawn in file order (later over earlier); each object's parts are drawn in
    file order on the pixels where that object is visible in the final object map.

    Returns:
        LabelMasks with (H, W) int32 ``object`` and ``part`` maps and the problems found.
    """
    instance = np.zeros(annotation.shape, np.int32)
    objects = np.zeros(annotation.shape, np.int32)
    for i, obj in enumerate(annotation.objects, start=1):
        instance[obj.mask] = i
        objects[obj.mask] = obj.class_ind
    part = np.zeros(annotation.shape, np.int32)
    problems = []
    for i, obj in enumerate(annotation.objects, start=1):
        visible = instance == i
        for p in obj.parts:
            grouped = group_part(obj.class_name, p.name)
            if grouped is None:
                problems.append(f"object{i - 1} ({obj.class_name}): unknown part {p.name!r}")
                continue
            part[p.mask & visible] = PART_NAMES.index(grouped) + 1
    if problems:
        logger.debug("%s: %d unknown parts", annotation.imname, len(problems))
    return LabelMasks(objects, part, tuple(problems))


def load_labels(path: str | Path) -> LabelMasks:
    """:func:`read_annotation` then :func:`decode`; raises BadAnnotation on a bad file."""
    return decode(read_annotation(path))


def resample(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resampling at pixel centres, e.g. 375x500 -> 112x112.

    Target pixel (i, j) takes source pixel (floor((i + 0.5) H / h), floor((j + 0.5) W / w)),
    computed in integers, so labels are never blended and the map is exact.

    Args:
        mask: (H, W) label or bool mask.
        size: target (h, w).

    Returns:
        (h, w) array of mask's dtype.
    """
    if mask.ndim != 2 or len(size) != 2 or min(size) < 1:
        raise SpecError("bad mask resampling request", given=(mask.shape, tuple(size)),
                        expected="a 2-D mask and a positive (h, w)", hint="e.g. (112, 112)")
    rows = ((2 * np.arange(size[0]) + 1) * mask.shape[0]) // (2 * size[0])
    cols = ((2 * np.arange(size[1]) + 1) * mask.shape[1]) // (2 * size[1])
    return mask[rows[:, None], cols[None, :]]
