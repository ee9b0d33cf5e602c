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
    splits: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Named subsets of the classes a benchmark reports apart (ScanNet-200's head/common/tail);
    not part of ``key`` (they change how results are summarised, not what is embedded)."""

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
        for split, names in self.splits:
            if unknown := sorted(set(names) - set(self.classes)):
                raise ValueError(f"vocabulary '{self.name}': split '{split}' names unknown classes {unknown}")

    def index(self, class_name: str) -> int:
        return self.classes.index(class_name)

    @property
    def key(self) -> str:
        """Identity for caches: name, version and a hash of the content."""
        digest = hashlib.sha256(repr((self.classes, self.prompts, self.prompt_class)).encode()).hexdigest()[:10]
        return f"{self.name}-v{self.version}-{digest}"


NYU40 = Vocabulary(
    "nyu40",
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
        "blinds",
        "desk",
        "shelves",
        "curtain",
        "dresser",
        "pillow",
        "mirror",
        "floor mat",
        "clothes",
        "ceiling",
        "books",
        "refrigerator",
        "television",
        "paper",
        "towel",
        "shower curtain",
        "box",
        "whiteboard",
        "person",
        "night stand",
        "toilet",
        "sink",
        "lamp",
        "bathtub",
        "bag",
        "otherstructure",
        "otherfurniture",
        "otherprop",
    ),
)
"""NYU Depth v2's 40 classes, class i = NYU40 id i + 1, as ``scannetv2-labels.combined.tsv``'s ``nyu40class``
spells them except "refridgerator", spelled as ScanNet-20 spells it so the two sets share names."""
NYU40_IDS = tuple(range(1, 41))

SCANNET20_NYU40_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
"""NYU40 id of each ScanNet-20 class, in class order (ScanNet's ``VALID_CLASS_IDS``)."""
SCANNET20 = Vocabulary("scannet20", "1", tuple(NYU40.classes[i - 1] for i in SCANNET20_NYU40_IDS))
"""ScanNet's 20 benchmark classes: NYU40 classes, named as ScanNet's ``CLASS_LABELS`` name them."""


MATTERPORT21 = Vocabulary(
    "matterport21", "1", tuple("other" if c == "otherfurniture" else c for c in SCANNET20.classes) + ("ceiling",)
)
"""OpenScene's Matterport3D 21 classes, derived as its source derives them from ScanNet-20:
otherfurniture becomes other, and ceiling is added."""

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

_SCANNET200 = (
    (1, "wall", "head"),
    (2, "chair", "head"),
    (3, "floor", "head"),
    (4, "table", "head"),
    (5, "door", "head"),
    (6, "couch", "head"),
    (7, "cabinet", "head"),
    (8, "shelf", "head"),
    (9, "desk", "head"),
    (10, "office chair", "head"),
    (11, "bed", "head"),
    (13, "pillow", "head"),
    (14, "sink", "head"),
    (15, "picture", "head"),
    (16, "window", "head"),
    (17, "toilet", "head"),
    (18, "bookshelf", "head"),
    (19, "monitor", "head"),
    (21, "curtain", "head"),
    (22, "book", "head"),
    (23, "armchair", "head"),
    (24, "coffee table", "head"),
    (26, "box", "head"),
    (27, "refrigerator", "head"),
    (28, "lamp", "head"),
    (29, "kitchen cabinet", "head"),
    (31, "towel", "head"),
    (32, "clothes", "head"),
    (33, "tv", "head"),
    (34, "nightstand", "head"),
    (35, "counter", "head"),
    (36, "dresser", "head"),
    (38, "stool", "head"),
    (39, "cushion", "common"),
    (40, "plant", "head"),
    (41, "ceiling", "head"),
    (42, "bathtub", "head"),
    (44, "end table", "common"),
    (45, "dining table", "common"),
    (46, "keyboard", "common"),
    (47, "bag", "common"),
    (48, "backpack", "head"),
    (49, "toilet paper", "common"),
    (50, "printer", "common"),
    (51, "tv stand", "head"),
    (52, "whiteboard", "head"),
    (54, "blanket", "common"),
    (55, "shower curtain", "head"),
    (56, "trash can", "head"),
    (57, "closet", "head"),
    (58, "stairs", "head"),
    (59, "microwave", "common"),
    (62, "stove", "head"),
    (63, "shoe", "common"),
    (64, "computer tower", "common"),
    (65, "bottle", "common"),
    (66, "bin", "common"),
    (67, "ottoman", "common"),
    (68, "bench", "common"),
    (69, "board", "head"),
    (70, "washing machine", "head"),
    (71, "mirror", "head"),
    (72, "copier", "head"),
    (73, "basket", "common"),
    (74, "sofa chair", "head"),
    (75, "file cabinet", "head"),
    (76, "fan", "common"),
    (77, "laptop", "common"),
    (78, "shower", "head"),
    (79, "paper", "tail"),
    (80, "person", "common"),
    (82, "paper towel dispenser", "common"),
    (84, "oven", "common"),
    (86, "blinds", "head"),
    (87, "rack", "common"),
    (88, "plate", "tail"),
    (89, "blackboard", "head"),
    (90, "piano", "common"),
    (93, "suitcase", "common"),
    (95, "rail", "common"),
    (96, "radiator", "head"),
    (97, "recycling bin", "head"),
    (98, "container", "common"),
    (99, "wardrobe", "head"),
    (100, "soap dispenser", "tail"),
    (101, "telephone", "common"),
    (102, "bucket", "tail"),
    (103, "clock", "tail"),
    (104, "stand", "common"),
    (105, "light", "common"),
    (106, "laundry basket", "common"),
    (107, "pipe", "common"),
    (110, "clothes dryer", "head"),
    (112, "guitar", "tail"),
    (115, "toilet paper holder", "tail"),
    (116, "seat", "common"),
    (118, "speaker", "tail"),
    (120, "column", "common"),
    (121, "bicycle", "common"),
    (122, "ladder", "common"),
    (125, "bathroom stall", "head"),
    (128, "shower wall", "head"),
    (130, "cup", "tail"),
    (131, "jacket", "common"),
    (132, "storage bin", "common"),
    (134, "coffee maker", "common"),
    (136, "dishwasher", "common"),
    (138, "paper towel roll", "tail"),
    (139, "machine", "common"),
    (140, "mat", "common"),
    (141, "windowsill", "common"),
    (145, "bar", "tail"),
    (148, "toaster", "tail"),
    (154, "bulletin board", "common"),
    (155, "ironing board", "tail"),
    (156, "fireplace", "common"),
    (157, "soap dish", "tail"),
    (159, "kitchen counter", "head"),
    (161, "doorframe", "head"),
    (163, "toilet paper dispenser", "tail"),
    (165, "mini fridge", "common"),
    (166, "fire extinguisher", "tail"),
    (168, "ball", "tail"),
    (169, "hat", "tail"),
    (170, "shower curtain rod", "tail"),
    (177, "water cooler", "common"),
    (180, "paper cutter", "tail"),
    (185, "tray", "tail"),
    (188, "shower door", "common"),
    (191, "pillar", "common"),
    (193, "ledge", "common"),
    (195, "toaster oven", "tail"),
    (202, "mouse", "tail"),
    (208, "toilet seat cover dispenser", "tail"),
    (213, "furniture", "common"),
    (214, "cart", "common"),
    (221, "storage container", "tail"),
    (229, "scale", "tail"),
    (230, "tissue box", "tail"),
    (232, "light switch", "tail"),
    (233, "crate", "tail"),
    (242, "power outlet", "tail"),
    (250, "decoration", "common"),
    (261, "sign", "tail"),
    (264, "projector", "tail"),
    (276, "closet door", "common"),
    (283, "vacuum cleaner", "common"),
    (286, "candle", "tail"),
    (300, "plunger", "tail"),
    (304, "stuffed animal", "tail"),
    (312, "headphones", "tail"),
    (323, "dish rack", "common"),
    (325, "broom", "tail"),
    (331, "guitar case", "tail"),
    (342, "range hood", "common"),
    (356, "dustpan", "tail"),
    (370, "hair dryer", "tail"),
    (392, "water bottle", "tail"),
    (395, "handicap bar", "tail"),
    (399, "purse", "tail"),
    (408, "vent", "tail"),
    (417, "shower floor", "tail"),
    (488, "water pitcher", "tail"),
    (540, "mailbox", "head"),
    (562, "bowl", "tail"),
    (570, "paper bag", "tail"),
    (572, "alarm clock", "tail"),
    (581, "music stand", "tail"),
    (609, "projector screen", "common"),
    (748, "divider", "common"),
    (776, "laundry detergent", "tail"),
    (1156, "bathroom counter", "common"),
    (1163, "object", "head"),
    (1164, "bathroom vanity", "head"),
    (1165, "closet wall", "head"),
    (1166, "laundry hamper", "common"),
    (1167, "bathroom stall door", "common"),
    (1168, "ceiling light", "common"),
    (1169, "trash bin", "common"),
    (1170, "dumbbell", "tail"),
    (1171, "stair rail", "head"),
    (1172, "tube", "tail"),
    (1173, "bathroom cabinet", "common"),
    (1174, "cd case", "tail"),
    (1175, "closet rod", "tail"),
    (1176, "coffee kettle", "tail"),
    (1178, "structure", "common"),
    (1179, "shower head", "tail"),
    (1180, "keyboard piano", "tail"),
    (1181, "case of water bottles", "tail"),
    (1182, "coat rack", "tail"),
    (1183, "storage organizer", "common"),
    (1184, "folded chair", "tail"),
    (1185, "fire alarm", "tail"),
    (1186, "power strip", "tail"),
    (1187, "calendar", "tail"),
    (1188, "poster", "tail"),
    (1189, "potted plant", "common"),
    (1190, "luggage", "tail"),
    (1191, "mattress", "common"),
)
"""ScanNet-200 (Rozenberszki et al. 2022) as ScanNet's ``BenchmarkScripts/ScanNet200``
(``scannet200_constants.py``, ``scannet200_splits.py``) defines it: per class, in class order, the raw-category
id (``scannetv2-labels.combined.tsv``'s ``id`` column, ``VALID_CLASS_IDS_200``), the label
(``CLASS_LABELS_200``) and the head/common/tail split by annotated-point frequency."""
SCANNET200_IDS = tuple(i for i, _, _ in _SCANNET200)
SCANNET200 = Vocabulary(
    "scannet200",
    "1",
    tuple(name for _, name, _ in _SCANNET200),
    splits=tuple((split, tuple(n for _, n, s in _SCANNET200 if s == split)) for split in ("head", "common", "tail")),
)

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
        NYU40,
        SCANNET200,
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


def class_splits(classes: list[str] | tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """The class splits (head/common/tail) of the built-in vocabulary with exactly these
    classes; none for other class lists (stages record class names, not vocabulary names)."""
    for vocab in VOCABULARIES.values():
        if vocab.splits and vocab.classes == tuple(classes):
            return dict(vocab.splits)
    return {}


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
