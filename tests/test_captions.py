"""caption-aligned's texts (SAS): real BLIP-style captions with the tags a real English tagger gives
them, taught to a tiny nltk tagger saved in nltk's layout and loaded through the teacher's own path."""

import json
import re

import pytest
from tiny_models import tagger_folder

from ovlift.models.loading import ModelLoadError
from ovlift.models.pos_tagger import PACKAGE, load_tagger, save_tagger, tagger_files, train_tagger
from ovlift.models.teachers.caption_aligned import (
    ADJECTIVES,
    NOUNS,
    CaptionAlignedConfig,
    caption_text,
    tag_caption,
)

# The caption as BLIP writes it; the Penn Treebank tags of its words as a real English tagger gives them:
# spaCy's en_core_web_sm 3.8.0 (`token.tag_`), run once on the Treebank tokenizer's words (nltk's own
# English tagger, which the teacher loads, is no PyPI package). Where nltk's treebank conventions likely
# differ, spaCy's stand: "next/RB to/IN" ("to" is always TO in the WSJ treebank), "close/NN up/IN",
# "living/NN room/NN". Then the label, the text in replace-noun mode (the paper), in adjectives mode (the code).
CAPTIONS = [
    ("a wooden bench", "DT JJ NN", "table", "a wooden table", "a wooden table in a scene"),
    (
        "a wooden park bench next to a tree",
        "DT JJ NN NN RB IN DT NN",
        "table",
        "a wooden table next to a tree",
        "a wooden table in a scene",
    ),
    (  # word-level: "bedroom" is not "bed", and it is the head noun
        "a bedroom with a bed and a lamp",
        "DT NN IN DT NN CC DT NN",
        "bed",
        "a bed with a bed and a lamp",
        "a bed in a scene",
    ),
    (  # a compound's modifier noun goes with its head
        "there is a black leather couch in the living room",
        "EX VBZ DT JJ NN NN IN DT NN NN",
        "sofa",
        "there is a black sofa in the living room",
        "a black sofa in a scene",
    ),
    (  # "a close up of" frames the object; "an" agrees with the label
        "a close up of a chair on a white background",
        "DT NN IN IN DT NN IN DT JJ NN",
        "armchair",
        "a close up of an armchair on a white background",
        "a white armchair in a scene",
    ),
    (
        "an old television sitting on top of a wooden table",
        "DT JJ NN VBG IN NN IN DT JJ NN",
        "tv",
        "an old tv sitting on top of a wooden table",
        "a old and wooden tv in a scene",  # the code's template has "a" whatever follows
    ),
    ("a toilet in a bathroom", "DT NN IN DT NN", "toilet", "a toilet in a bathroom", "a toilet in a scene"),
    (  # number does not agree
        "a pile of books on a shelf",
        "DT NN IN NNS IN DT NN",
        "book",
        "a pile of book on a shelf",
        "a book in a scene",
    ),
    (
        "a white refrigerator freezer sitting in a kitchen",
        "DT JJ NN NN VBG IN DT NN",
        "fridge",
        "a white fridge sitting in a kitchen",
        "a white fridge in a scene",
    ),
    (
        "a lamp on a nightstand next to a bed",
        "DT NN IN DT NN RB IN DT NN",
        "table lamp",
        "a table lamp on a nightstand next to a bed",
        "a table lamp in a scene",
    ),
    (
        "an empty room with a window",
        "DT JJ NN IN DT NN",
        "wall",
        "an empty wall with a window",
        "a empty wall in a scene",
    ),
    (
        "a picture of a kitchen with a sink",
        "DT NN IN DT NN IN DT NN",
        "cabinet",
        "a picture of a cabinet with a sink",
        "a cabinet in a scene",
    ),
    (  # a framing noun with no noun after "of" is the head
        "a blurry photo of white",
        "DT JJ NN IN JJ",
        "curtain",
        "a blurry curtain of white",
        "a blurry and white curtain in a scene",
    ),
    ("a man sitting on a couch", "DT NN VBG IN DT NN", "person", "a person sitting on a couch", "a person in a scene"),
    ("An apple on a table", "DT NN IN DT NN", "bowl", "A bowl on a table", "a bowl in a scene"),
    (  # punctuation and spacing outside the replaced words stay as they were
        "a kitchen with a stove, a sink and a microwave.",
        "DT NN IN DT NN , DT NN CC DT NN .",
        "counter",
        "a counter with a stove, a sink and a microwave.",
        "a counter in a scene",
    ),
    (
        "the biggest window in the room",
        "DT JJS NN IN DT NN",
        "window",
        "the biggest window in the room",
        "a biggest window in a scene",
    ),
    (
        "a smaller chair beside a large bed",
        "DT JJR NN IN DT JJ NN",
        "stool",
        "a smaller stool beside a large bed",
        "a smaller and large stool in a scene",
    ),
    (
        "a dark bathroom with a green tiled wall",
        "DT JJ NN IN DT JJ VBN NN",
        "wall",
        "a dark wall with a green tiled wall",
        "a dark and green wall in a scene",
    ),
    ("white and blue", "JJ CC JJ", "chair", "a chair", "a white and blue chair in a scene"),  # no noun
]


def words_of(text: str) -> list[str]:
    """The words and punctuation marks of a caption, split the obvious way (enough for these captions)."""
    return re.findall(r"\w+|[^\w\s]", text)


def tags_of(caption: str, tags: str) -> list[tuple[str, str]]:
    return list(zip(words_of(caption), tags.split(), strict=True))


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    """Taught the English tagger's tags, saved in nltk's layout and loaded through the teacher's loader."""
    sentences = tuple(" ".join(f"{w}/{t}" for w, t in tags_of(c, tags)) for c, tags, *_ in CAPTIONS)
    return load_tagger(tagger_folder(tmp_path_factory.mktemp("tagger"), sentences), "teacher 't'")


def test_each_word_of_a_caption_gets_the_tag_the_english_tagger_gives_it(tagger):
    """The caption as BLIP writes it ("a stove," with the comma attached) reaches the tagger as the
    English tagger's words, in order, each with its span in the caption."""
    for caption, tags, *_ in CAPTIONS:
        tokens = tag_caption(caption, tagger)
        assert [(t.text, t.tag) for t in tokens] == tags_of(caption, tags), caption
        assert [caption[t.start : t.end] for t in tokens] == words_of(caption), caption


@pytest.mark.parametrize("caption, label, expected", [(c, label, text) for c, _, label, text, _ in CAPTIONS])
def test_replace_noun_puts_the_label_in_place_of_the_head_noun(tagger, caption, label, expected):
    assert caption_text(caption, label, tagger, "replace-noun") == expected


@pytest.mark.parametrize("caption, label, expected", [(c, label, text) for c, _, label, _, text in CAPTIONS])
def test_adjectives_gives_sas_codes_text(tagger, caption, label, expected):
    assert caption_text(caption, label, tagger, "adjectives") == expected


def test_adjectives_are_exactly_the_words_tagged_jj_jjr_jjs(tagger):
    assert ADJECTIVES == {"JJ", "JJR", "JJS"}
    for caption, tags, *_ in CAPTIONS:
        words = [w for w, tag in tags_of(caption, tags) if tag in ("JJ", "JJR", "JJS")]
        text = caption_text(caption, "thing", tagger, "adjectives")
        assert text == " ".join(["a", " and ".join(words), "thing in a scene"]).replace("  ", " ")


def test_replace_noun_replaces_a_whole_run_of_words_the_english_tagger_calls_nouns(tagger):
    """Whichever run it picks, the words replaced are nouns by the English tagger's tags, the run
    is whole (no noun right before or after it), and the rest of the caption stays, articles aside."""
    assert NOUNS == {"NN", "NNS", "NNP", "NNPS"}
    plain = {"an": "a", "An": "A"}
    for caption, tags, *_ in CAPTIONS:
        words, tags = words_of(caption), tags.split()
        text = [plain.get(w, w) for w in words_of(caption_text(caption, "new thing", tagger, "replace-noun"))]
        if not any(t.startswith("NN") for t in tags):
            assert text == ["a", "new", "thing"], caption
            continue
        runs = [
            (i, j)
            for i in range(len(words))
            for j in range(i + 1, len(words) + 1)
            if [plain.get(w, w) for w in words[:i] + ["new", "thing"] + words[j:]] == text
        ]
        assert len(runs) == 1, (caption, text)
        (i, j), noun = runs[0], [t.startswith("NN") for t in tags] + [False]
        assert all(noun[i:j]) and not noun[j] and (i == 0 or not noun[i - 1]), (caption, words[i:j])


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
    ours = train_tagger([tags_of(c, tags) for c, tags, *_ in CAPTIONS[:4]])
    save_tagger(ours, tmp_path / "taggers" / PACKAGE)
    theirs = PerceptronTagger(loc=str(tmp_path / "taggers" / PACKAGE))
    words = words_of(CAPTIONS[3][0])
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
