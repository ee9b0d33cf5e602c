"""caption-aligned's texts (SAS): real BLIP-style captions, tagged by a tiny nltk tagger that
was trained on them with the tags nltk's English tagger gives, saved in nltk's layout and
loaded through the teacher's own path."""

import json
import re

import pytest

from ovlift.models.loading import ModelLoadError
from ovlift.models.pos_tagger import PACKAGE, load_tagger, save_tagger, tagger_files, train_tagger
from ovlift.models.teachers.caption_aligned import (
    ADJECTIVES,
    CaptionAlignedConfig,
    caption_text,
    tag_caption,
)
from ovlift.models.tiny import tagged, tagger_folder

# caption (word/TAG, Penn Treebank), label, text in replace-noun mode (the paper), in adjectives mode (the code)
CAPTIONS = [
    ("a/DT wooden/JJ bench/NN", "table", "a wooden table", "a wooden table in a scene"),
    (
        "a/DT wooden/JJ park/NN bench/NN next/JJ to/TO a/DT tree/NN",
        "table",
        "a wooden table next to a tree",
        "a wooden and next table in a scene",  # nltk tags "next" (to) JJ, and the code keeps it
    ),
    (  # word-level: "bedroom" is not "bed", and it is the head noun
        "a/DT bedroom/NN with/IN a/DT bed/NN and/CC a/DT lamp/NN",
        "bed",
        "a bed with a bed and a lamp",
        "a bed in a scene",
    ),
    (  # a compound's modifier noun goes with its head; "living" (VBG) is no adjective
        "there/EX is/VBZ a/DT black/JJ leather/NN couch/NN in/IN the/DT living/VBG room/NN",
        "sofa",
        "there is a black sofa in the living room",
        "a black sofa in a scene",
    ),
    (  # "a close up of" frames the object; "an" agrees with the label
        "a/DT close/NN up/RB of/IN a/DT chair/NN on/IN a/DT white/JJ background/NN",
        "armchair",
        "a close up of an armchair on a white background",
        "a white armchair in a scene",
    ),
    (
        "an/DT old/JJ television/NN sitting/VBG on/IN top/NN of/IN a/DT wooden/JJ table/NN",
        "tv",
        "an old tv sitting on top of a wooden table",
        "a old and wooden tv in a scene",  # the code's template has "a" whatever follows
    ),
    ("a/DT toilet/NN in/IN a/DT bathroom/NN", "toilet", "a toilet in a bathroom", "a toilet in a scene"),
    (  # number does not agree
        "a/DT pile/NN of/IN books/NNS on/IN a/DT shelf/NN",
        "book",
        "a pile of book on a shelf",
        "a book in a scene",
    ),
    (
        "a/DT white/JJ refrigerator/NN freezer/NN sitting/VBG in/IN a/DT kitchen/NN",
        "fridge",
        "a white fridge sitting in a kitchen",
        "a white fridge in a scene",
    ),
    (
        "a/DT lamp/NN on/IN a/DT nightstand/NN next/JJ to/TO a/DT bed/NN",
        "table lamp",
        "a table lamp on a nightstand next to a bed",
        "a next table lamp in a scene",
    ),
    ("an/DT empty/JJ room/NN with/IN a/DT window/NN", "wall", "an empty wall with a window", "a empty wall in a scene"),
    (
        "a/DT picture/NN of/IN a/DT kitchen/NN with/IN a/DT sink/NN",
        "cabinet",
        "a picture of a cabinet with a sink",
        "a cabinet in a scene",
    ),
    (  # a framing noun with no noun after "of" is the head
        "a/DT blurry/JJ photo/NN of/IN white/JJ",
        "curtain",
        "a blurry curtain of white",
        "a blurry and white curtain in a scene",
    ),
    (
        "a/DT man/NN sitting/VBG on/IN a/DT couch/NN",
        "person",
        "a person sitting on a couch",
        "a person in a scene",
    ),
    ("An/DT apple/NN on/IN a/DT table/NN", "bowl", "A bowl on a table", "a bowl in a scene"),
    (  # punctuation and spacing outside the replaced words stay as they were
        "a/DT kitchen/NN with/IN a/DT stove/NN ,/, a/DT sink/NN and/CC a/DT microwave/NN ./.",
        "counter",
        "a counter with a stove, a sink and a microwave.",
        "a counter in a scene",
    ),
    (
        "the/DT biggest/JJS window/NN in/IN the/DT room/NN",
        "window",
        "the biggest window in the room",
        "a biggest window in a scene",
    ),
    (
        "a/DT smaller/JJR chair/NN beside/IN a/DT large/JJ bed/NN",
        "stool",
        "a smaller stool beside a large bed",
        "a smaller and large stool in a scene",
    ),
    (
        "a/DT dark/JJ bathroom/NN with/IN a/DT green/JJ tiled/VBN wall/NN",
        "wall",
        "a dark wall with a green tiled wall",
        "a dark and green wall in a scene",
    ),
    ("white/JJ and/CC blue/JJ", "chair", "a chair", "a white and blue chair in a scene"),  # no noun
]


def caption_of(sentence: str) -> str:
    """The caption as BLIP writes it: the tagged words, punctuation attached."""
    return re.sub(r" ([,.])", r"\1", " ".join(w for w, _ in tagged(sentence)))


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    """Saved in nltk's layout and loaded through the teacher's loader."""
    folder = tagger_folder(tmp_path_factory.mktemp("tagger"), tuple(s for s, *_ in CAPTIONS))
    return load_tagger(folder, "teacher 't'")


def test_the_tiny_tagger_tags_the_captions_as_nltks_tagger_does(tagger):
    for sentence, *_ in CAPTIONS:
        assert [(t.text, t.tag) for t in tag_caption(caption_of(sentence), tagger)] == tagged(sentence)


@pytest.mark.parametrize("sentence, label, expected", [(s, label, text) for s, label, text, _ in CAPTIONS])
def test_replace_noun_puts_the_label_in_place_of_the_head_noun(tagger, sentence, label, expected):
    assert caption_text(caption_of(sentence), label, tagger, "replace-noun") == expected


@pytest.mark.parametrize("sentence, label, expected", [(s, label, text) for s, label, _, text in CAPTIONS])
def test_adjectives_gives_sas_codes_text(tagger, sentence, label, expected):
    assert caption_text(caption_of(sentence), label, tagger, "adjectives") == expected


def test_adjectives_are_exactly_the_words_tagged_jj_jjr_jjs(tagger):
    assert ADJECTIVES == {"JJ", "JJR", "JJS"}
    for sentence, *_ in CAPTIONS:
        words = [w for w, tag in tagged(sentence) if tag in ("JJ", "JJR", "JJS")]
        text = caption_text(caption_of(sentence), "thing", tagger, "adjectives")
        assert text == " ".join(["a", " and ".join(words), "thing in a scene"]).replace("  ", " ")


def test_an_empty_caption_and_a_template(tagger):
    assert caption_text("", "chair", tagger, "adjectives") == "a chair in a scene"
    assert caption_text("", "chair", tagger, "replace-noun") == "a chair"
    template = "a photo of the {adjectives} {label}."
    assert caption_text("a wooden bench", "table", tagger, "adjectives", template) == "a photo of the wooden table."


@pytest.mark.parametrize("template", ["a {adjectives} thing", "a {label} {colour}", "a {label"])
def test_a_template_names_the_label_and_nothing_but_the_adjectives(tmp_path, template):
    with pytest.raises(ValueError, match="must name \\{label\\}|caption_template"):
        CaptionAlignedConfig(
            segmenter_path=str(tmp_path),
            captioner_path=str(tmp_path),
            tagger_path=str(tmp_path),
            caption_template=template,
        )


def test_the_tagger_path_is_required(tmp_path):
    with pytest.raises(ValueError, match="tagger_path"):
        CaptionAlignedConfig(segmenter_path=str(tmp_path), captioner_path=str(tmp_path))


def test_a_tagger_saved_here_loads_in_nltk_and_the_other_way_round(tmp_path, monkeypatch):
    import nltk
    from nltk.tag.perceptron import PerceptronTagger

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])  # nltk reads and writes only under its data roots
    ours = train_tagger([tagged(s) for s, *_ in CAPTIONS[:4]])
    save_tagger(ours, tmp_path / "taggers" / PACKAGE)
    theirs = PerceptronTagger(loc=str(tmp_path / "taggers" / PACKAGE))
    words = caption_of(CAPTIONS[3][0]).split()
    assert theirs.tag(words) == ours.tag(words)
    theirs.save_to_json(lang="eng", loc=str(tmp_path / "saved"))
    assert load_tagger(tmp_path / "saved", "t").tag(words) == ours.tag(words)
    assert load_tagger(tmp_path, "t").tag(words) == ours.tag(words)  # an nltk_data folder


def _malformed(tmp_path, part, text):
    folder = tagger_folder(tmp_path / "tagger") / PACKAGE
    file = next(f for f in tagger_files(folder) if f".{part}." in f.name)
    file.write_text(text)
    return folder


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "nowhere", "tagger directory '.*nowhere' does not exist \\(expected nltk's"),
        (
            lambda p: (p / "empty").mkdir() or p / "empty",
            "'.*empty' has no averaged_perceptron_tagger_eng.weights.json, .*classes.json \\(expected nltk's",
        ),
        (lambda p: _malformed(p, "weights", "{not json"), "cannot read '.*weights.json' as JSON"),
        (lambda p: _malformed(p, "classes", json.dumps({"NN": 1})), "'.*classes.json' is not a non-empty list of tags"),
        (lambda p: _malformed(p, "weights", json.dumps({"bias": 1.0})), "'.*weights.json' is not a mapping feature"),
    ],
    ids=["missing", "empty", "not-json", "classes-not-a-list", "weights-not-nested"],
)
def test_a_missing_or_malformed_tagger_gives_one_clear_error(tmp_path, make, message):
    with pytest.raises(ModelLoadError, match=f"^teacher 't': {message}"):
        load_tagger(make(tmp_path), "teacher 't'")
