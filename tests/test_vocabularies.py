import pytest

from ovlift.models.text import TEMPLATE_SETS
from ovlift.vocabularies import NUSCENES16, SCANNET20, get_vocabulary, load_vocabulary_file


def test_builtin_label_sets():
    assert len(SCANNET20.classes) == 20 and SCANNET20.prompts == SCANNET20.classes
    sizes = {
        name: len(get_vocabulary(name).classes)
        for name in ("matterport21", "matterport40", "matterport80", "matterport160")
    }
    assert sizes == {"matterport21": 21, "matterport40": 40, "matterport80": 80, "matterport160": 160}
    assert get_vocabulary("matterport160").classes[:40] == get_vocabulary("matterport40").classes


def test_nuscenes_prompts_43_detailed_names_mapped_back_to_16():
    assert len(NUSCENES16.classes) == 16 and len(NUSCENES16.prompts) == 43
    mapping = dict(zip(NUSCENES16.prompts, (NUSCENES16.classes[c] for c in NUSCENES16.prompt_class)))
    assert mapping["pedestrian"] == "person" and mapping["excavator"] == "construction vehicle"
    assert mapping["road"] == "drivable surface" and mapping["curb"] == "other flat" and mapping["lawn"] == "terrain"
    assert set(NUSCENES16.prompt_class) == set(range(16))  # every class is prompted


def test_user_vocabulary_from_a_file(tmp_path):
    path = tmp_path / "kitchen.txt"
    path.write_text("# my classes\nkettle\nsofa | couch\n\nmug\n")
    vocab = get_vocabulary(str(path))
    assert vocab.classes == ("kettle", "sofa", "mug")
    assert vocab.prompts == ("kettle", "sofa", "couch", "mug") and vocab.prompt_class == (0, 1, 1, 2)
    path.write_text("kettle\nmug\n")
    assert load_vocabulary_file(path).key != vocab.key  # versioned by content


def test_unknown_vocabulary_and_empty_file(tmp_path):
    with pytest.raises(KeyError, match="unknown vocabulary 'scannet21'"):
        get_vocabulary("scannet21")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="lists no classes"):
        get_vocabulary(str(tmp_path / "empty.txt"))


def test_template_sets():
    assert TEMPLATE_SETS["single"] == ("a {} in a scene",)
    assert len(TEMPLATE_SETS["ensemble"]) == 85 and len(set(TEMPLATE_SETS["ensemble"])) == 85
    assert all("{}" in t for t in TEMPLATE_SETS["ensemble"])


def test_matterport21_is_openscenes_list():
    """Derived from ScanNet-20 as OpenScene derives it; here its MATTERPORT_LABELS_21 written out."""
    openscene = (
        "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
        "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink", "bathtub", "other", "ceiling",
    )  # fmt: skip
    assert get_vocabulary("matterport21").classes == openscene
