"""Named, versioned class lists (label sets and text-query vocabularies).

A vocabulary has its classes (what label values index) and the prompts that are
embedded for them. Usually each class is its own prompt; nuScenes-16 prompts 43
detailed names (as OpenScene does) and maps each back to one of the 16 classes.
User vocabularies come from a text file, one class per line (``a | b`` lines give
several prompts for one class).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Vocabulary:
    name: str
    version: str
    classes: tuple[str, ...]
    """Class names; a label value is an index into this tuple."""
    prompts: tuple[str, ...] = ()
    """Names that are embedded (defaults to ``classes``)."""
    prompt_class: tuple[int, ...] = field(default=())
    """Class index of each prompt (defaults to the identity)."""

    def __post_init__(self) -> None:
        if not self.prompts:
            object.__setattr__(self, "prompts", self.classes)
            object.__setattr__(self, "prompt_class", tuple(range(len(self.classes))))
        if len(self.prompts) != len(self.prompt_class):
            raise ValueError(
                f"vocabulary '{self.name}': {len(self.prompts)} prompts but {len(self.prompt_class)} mappings"
            )
        if not all(0 <= c < len(self.classes) for c in self.prompt_class):
            raise ValueError(f"vocabulary '{self.name}': a prompt maps outside its {len(self.classes)} classes")

    def index(self, class_name: str) -> int:
        return self.classes.index(class_name)

    @property
    def key(self) -> str:
        """Identity for caches: name, version and a hash of the content."""
        digest = hashlib.sha256(repr((self.classes, self.prompts, self.prompt_class)).encode()).hexdigest()[:10]
        return f"{self.name}-v{self.version}-{digest}"


SCANNET20 = Vocabulary(
    "scannet20",
    "1",
    (
        "wall",
        "floor",
        "cabinet",
        "bed",
        "chair",
        "sofa",
        "table",
        "door",
        "window",
        "bookshelf",
        "picture",
        "counter",
        "desk",
        "curtain",
        "refrigerator",
        "shower curtain",
        "toilet",
        "sink",
        "bathtub",
        "otherfurniture",
    ),
)

MATTERPORT21 = Vocabulary(
    "matterport21",
    "1",
    (
        "wall",
        "floor",
        "cabinet",
        "bed",
        "chair",
        "sofa",
        "table",
        "door",
        "window",
        "bookshelf",
        "picture",
        "counter",
        "desk",
        "curtain",
        "refrigerator",
        "shower curtain",
        "toilet",
        "sink",
        "bathtub",
        "other",
        "ceiling",
    ),
)

_MATTERPORT40 = (
    "wall",
    "door",
    "ceiling",
    "floor",
    "picture",
    "window",
    "chair",
    "pillow",
    "lamp",
    "cabinet",
    "curtain",
    "table",
    "plant",
    "mirror",
    "towel",
    "sink",
    "shelves",
    "sofa",
    "bed",
    "night stand",
    "toilet",
    "column",
    "banister",
    "stairs",
    "stool",
    "vase",
    "television",
    "pot",
    "desk",
    "box",
    "coffee table",
    "counter",
    "bench",
    "garbage bin",
    "fireplace",
    "clothes",
    "bathtub",
    "book",
    "air vent",
    "faucet",
)
_MATTERPORT80 = _MATTERPORT40 + (
    "photo",
    "toilet paper",
    "fan",
    "railing",
    "sculpture",
    "dresser",
    "rug",
    "ottoman",
    "bottle",
    "refridgerator",
    "bookshelf",
    "wardrobe",
    "pipe",
    "monitor",
    "stand",
    "drawer",
    "container",
    "light switch",
    "purse",
    "door way",
    "basket",
    "chandelier",
    "oven",
    "clock",
    "stove",
    "washing machine",
    "shower curtain",
    "fire alarm",
    "bin",
    "chest",
    "microwave",
    "blinds",
    "bowl",
    "tissue box",
    "plate",
    "tv stand",
    "shoe",
    "heater",
    "headboard",
    "bucket",
)
_MATTERPORT160 = _MATTERPORT80 + (
    "candle",
    "flower pot",
    "speaker",
    "furniture",
    "sign",
    "air conditioner",
    "fire extinguisher",
    "curtain rod",
    "floor mat",
    "printer",
    "telephone",
    "blanket",
    "handle",
    "shower head",
    "soap",
    "keyboard",
    "thermostat",
    "radiator",
    "kitchen island",
    "paper towel",
    "sheet",
    "glass",
    "dishwasher",
    "cup",
    "ladder",
    "garage door",
    "hat",
    "exit sign",
    "piano",
    "board",
    "rope",
    "ball",
    "excercise equipment",
    "hanger",
    "candlestick",
    "light",
    "scale",
    "bag",
    "laptop",
    "treadmill",
    "guitar",
    "display case",
    "toilet paper holder",
    "bar",
    "tray",
    "urn",
    "decorative plate",
    "pool table",
    "jacket",
    "bottle of soap",
    "water cooler",
    "utensil",
    "tea pot",
    "stuffed animal",
    "paper towel dispenser",
    "lamp shade",
    "car",
    "toilet brush",
    "doll",
    "drum",
    "whiteboard",
    "range hood",
    "candelabra",
    "toy",
    "foot rest",
    "soap dish",
    "placemat",
    "cleaner",
    "computer",
    "knob",
    "paper",
    "projector",
    "coat hanger",
    "case",
    "pan",
    "luggage",
    "trinket",
    "chimney",
    "person",
    "alarm",
)
SAS_SCANNET21 = Vocabulary("sas-scannet21", "1", MATTERPORT21.classes)
"""SAS's indoor vocabulary of capability and fusion: ScanNet-20's order with 'other' at
index 19 (in place of otherfurniture), then ceiling (the names of matterport21)."""

MATTERPORT40 = Vocabulary("matterport40", "1", _MATTERPORT40)
MATTERPORT80 = Vocabulary("matterport80", "1", _MATTERPORT80)
MATTERPORT160 = Vocabulary("matterport160", "1", _MATTERPORT160)

_NUSCENES_DETAILS = (
    ("barrier", 0),
    ("barricade", 0),
    ("bicycle", 1),
    ("bus", 2),
    ("car", 3),
    ("bulldozer", 4),
    ("excavator", 4),
    ("concrete mixer", 4),
    ("crane", 4),
    ("dump truck", 4),
    ("motorcycle", 5),
    ("person", 6),
    ("pedestrian", 6),
    ("traffic cone", 7),
    ("trailer", 8),
    ("semi trailer", 8),
    ("cargo container", 8),
    ("shipping container", 8),
    ("freight container", 8),
    ("truck", 9),
    ("road", 10),
    ("curb", 11),
    ("traffic island", 11),
    ("traffic median", 11),
    ("sidewalk", 12),
    ("grass", 13),
    ("grassland", 13),
    ("lawn", 13),
    ("meadow", 13),
    ("turf", 13),
    ("sod", 13),
    ("building", 14),
    ("wall", 14),
    ("pole", 14),
    ("awning", 14),
    ("tree", 15),
    ("trunk", 15),
    ("tree trunk", 15),
    ("bush", 15),
    ("shrub", 15),
    ("plant", 15),
    ("flower", 15),
    ("woods", 15),
)
NUSCENES16 = Vocabulary(
    "nuscenes16",
    "1",
    (
        "barrier",
        "bicycle",
        "bus",
        "car",
        "construction vehicle",
        "motorcycle",
        "person",
        "traffic cone",
        "trailer",
        "truck",
        "drivable surface",
        "other flat",
        "sidewalk",
        "terrain",
        "manmade",
        "vegetation",
    ),
    prompts=tuple(name for name, _ in _NUSCENES_DETAILS),
    prompt_class=tuple(cls for _, cls in _NUSCENES_DETAILS),
)
"""OpenScene's nuScenes label set: 43 detailed names prompted, mapped back to 16."""

CLIP2SCENE_NUSCENES16 = Vocabulary(
    "clip2scene-nuscenes16",
    "1",
    NUSCENES16.classes,
    prompts=(
        "barrier",
        "bicycle",
        "bus",
        "car",
        "construction vehicle",
        "motorcycle",
        "pedestrian",
        "traffic_cone",
        "trailer",
        "truck",
        "driveable surface",
        "other_flat",
        "sidewalk",
        "terrain",
        "manmade",
        "vegetation",
    ),
    prompt_class=tuple(range(16)),
)
"""CLIP2Scene's nuScenes text set: one prompt per class, spelled as its code's ``nuscenes_classes``
(utils/prompt_engineering.py: "pedestrian", "traffic_cone", "driveable surface", "other_flat"), in
nuScenes-16's class order and with its class names, so labels and evaluation match ``nuscenes16``."""

CITYSCAPES19 = Vocabulary(
    "cityscapes19",
    "1",
    (
        "road",
        "sidewalk",
        "building",
        "wall",
        "fence",
        "pole",
        "traffic light",
        "traffic sign",
        "vegetation",
        "terrain",
        "sky",
        "person",
        "rider",
        "car",
        "truck",
        "bus",
        "train",
        "motorcycle",
        "bicycle",
    ),
)
"""Cityscapes' 19 training classes (trainId 0-18), as CLIP2Scene's ``cityscapes_classes`` spells them:
the "prompts of another label set" ablation (CLIP2Scene Tab. 1, Cityscapes prompts)."""

SEMANTICKITTI19 = Vocabulary(
    "semantickitti19",
    "1",
    (
        "car",
        "bicycle",
        "motorcycle",
        "truck",
        "other vehicle",
        "person",
        "bicyclist",
        "motorcyclist",
        "road",
        "parking",
        "sidewalk",
        "other ground",
        "building",
        "fence",
        "vegetation",
        "trunk",
        "terrain",
        "pole",
        "traffic sign",
    ),
)
"""SemanticKITTI's 19 evaluated classes (learning map 1-19, hyphens as spaces), as CLIP2Scene's
``kitti_classes`` spells them: the "prompts of another label set" ablation (Tab. 1, SemanticKITTI prompts)."""

S3DIS13 = Vocabulary(
    "s3dis13",
    "1",
    (
        "ceiling",
        "floor",
        "wall",
        "beam",
        "column",
        "window",
        "door",
        "table",
        "chair",
        "sofa",
        "bookcase",
        "board",
        "clutter",
    ),
)
"""S3DIS's 13 classes in the benchmark's order (pointnet's ``sem_seg/meta/class_names.txt``, Pointcept's
S3DIS ``class_names``), the classes of the Stanford 2D-3D-S annotations; label value = index here."""

VOCABULARIES: dict[str, Vocabulary] = {
    v.name: v
    for v in (
        SCANNET20,
        SAS_SCANNET21,
        MATTERPORT21,
        MATTERPORT40,
        MATTERPORT80,
        MATTERPORT160,
        NUSCENES16,
        CLIP2SCENE_NUSCENES16,
        CITYSCAPES19,
        SEMANTICKITTI19,
        S3DIS13,
    )
}


def load_vocabulary_file(path: str | Path) -> Vocabulary:
    """One class per line; ``sofa | couch`` prompts both names for class 'sofa'."""
    path = Path(path)
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
    except OSError as err:
        raise FileNotFoundError(f"vocabulary file '{path}': {err.strerror}") from None
    classes, prompts, mapping = [], [], []
    for line in lines:
        if not line or line.startswith("#"):
            continue
        names = [n.strip() for n in line.split("|") if n.strip()]
        classes.append(names[0])
        prompts += names
        mapping += [len(classes) - 1] * len(names)
    if not classes:
        raise ValueError(f"vocabulary file '{path}' lists no classes")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    return Vocabulary(path.stem, digest, tuple(classes), tuple(prompts), tuple(mapping))


def get_vocabulary(name: str) -> Vocabulary:
    """A built-in vocabulary by name, or a user one from a file path."""
    if name in VOCABULARIES:
        return VOCABULARIES[name]
    if Path(name).suffix in (".txt", ".csv") or "/" in name:
        return load_vocabulary_file(name)
    raise KeyError(f"unknown vocabulary '{name}'; known: {sorted(VOCABULARIES)} or a .txt file path")
