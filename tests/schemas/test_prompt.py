"""MoCha structured prompt: golden renders and the token budget with a real T5 tokenizer class
(built offline from a vocabulary trained in the test, never from the hub)."""
from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.caption import Camera, Caption, Character, Environment
from schemas.prompt import count_tokens, render_from_json, render_prompt
from tests.helpers.prompt_tags import tag_report

WOMAN = Character(tag="Person1", appearance="a young woman with curly red hair, a green jacket", position="center",
                  facing="camera", emotion="cheerful", speaking=True, actions=["smiles"])
STUDIO = Caption(characters=[WOMAN], environment=Environment(setting="a recording studio"),
                 camera=Camera(shot_size="close_up", angle="eye_level", movement="static"))
STREET = Caption(
    characters=[
        Character(tag="Person1", appearance="an old man with a white beard", position="left", facing="right",
                  emotion="serious", speaking=True),
        Character(tag="Person2", appearance="a girl in a yellow raincoat", position="right", facing="left",
                  actions=["holds an umbrella"]),
    ],
    environment=Environment(setting="a rainy street", lighting="overcast light"),
    camera=Camera(shot_size="medium", movement="handheld"),
)

GOLDEN_1CLIP_1CHAR = """One video clip.
Characters:
Person1: a young woman with curly red hair, a green jacket.
First clip: Close-up shot, eye-level, static camera. Setting: a recording studio. Person1 (center of frame, facing the camera, cheerful) talks, smiles."""

GOLDEN_1CLIP_2CHAR = """One video clip.
Characters:
Person1: an old man with a white beard.
Person2: a girl in a yellow raincoat.
First clip: Medium shot, handheld camera. Setting: a rainy street, overcast light. Person1 (left of frame, facing right, serious) talks. Person2 (right of frame, facing left) listens, holds an umbrella."""

GOLDEN_2CLIP_1CHAR = """Two video clips.
Characters:
Person1: a young woman with curly red hair, a green jacket.
First clip: Close-up shot, eye-level, static camera. Setting: a recording studio. Person1 (center of frame, facing the camera, cheerful) talks, smiles.
Second clip: Wide shot. Person1 stays silent, walks away. She leaves the studio."""

GOLDEN_2CLIP_2CHAR = """Two video clips.
Characters:
Person1: an old man with a white beard.
Person2: a girl in a yellow raincoat.
First clip: Medium shot, handheld camera. Setting: a rainy street, overcast light. Person1 (left of frame, facing right, serious) talks. Person2 (right of frame, facing left) listens, holds an umbrella.
Second clip: Close-up shot. Person2 (worried) talks."""


def second_studio_clip() -> Caption:
    # A later description of the same woman: the definition comes from her first clip only.
    her = Character(tag="Person1", appearance="a woman, green jacket", actions=["walks away"])
    return Caption(characters=[her], camera=Camera(shot_size="wide"), summary="She leaves the studio")


def reverse_shot() -> Caption:
    # Shot/reverse-shot: only Person2 is on screen (a group clip, not a stand-alone caption).
    girl = Character(tag="Person2", appearance="a girl, yellow coat", emotion="worried", speaking=True)
    return Caption.model_construct(characters=[girl], environment=Environment(), camera=Camera(shot_size="close_up"),
                                   summary=None)


@pytest.fixture(scope="module")
def t5_tokenizer():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import T5TokenizerFast

    corpus = [GOLDEN_1CLIP_1CHAR, GOLDEN_1CLIP_2CHAR, GOLDEN_2CLIP_1CHAR, GOLDEN_2CLIP_2CHAR,
              "Three video clips. Fourth clip: a man in a blue suit sits at a desk, looking down, nervous.",
              "Setting: a kitchen, warm light. Person3 (right of frame) listens, nods; arms crossed."] * 4
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=300, special_tokens=["<pad>", "</s>", "<unk>"],
                                                            unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))])
    t5 = T5TokenizerFast(tokenizer_object=tok, extra_ids=0, eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    assert t5("Person1 talks")["input_ids"][-1] == t5.eos_token_id
    return t5


@pytest.mark.parametrize("captions,golden", [
    ([STUDIO], GOLDEN_1CLIP_1CHAR),
    ([STREET], GOLDEN_1CLIP_2CHAR),
    ([STUDIO, second_studio_clip()], GOLDEN_2CLIP_1CHAR),
    ([STREET, reverse_shot()], GOLDEN_2CLIP_2CHAR),
], ids=["1clip-1char", "1clip-2char", "2clip-1char", "2clip-2char"])
def test_golden(captions, golden, t5_tokenizer):
    r = render_prompt(captions, t5_tokenizer, budget=256)
    assert r.text == golden
    assert r.fits and r.dropped == []
    assert r.num_tokens == len(t5_tokenizer(golden)["input_ids"])


def big_captions() -> list[Caption]:
    people = [
        Character(tag="Person1", appearance="a tall man with slicked-back black hair, a navy pinstripe suit, "
                  "a silver watch, a thin moustache", position="left", facing="right", emotion="angry", speaking=True,
                  actions=["points at Person2", "slams the table", "leans forward"],
                  body_language="clenched fists and a stiff back"),
        Character(tag="Person2", appearance="a young woman with a blonde bob, round glasses, a mustard cardigan",
                  position="center", facing="left", emotion="anxious", actions=["fidgets with a pen", "looks away"],
                  body_language="hunched shoulders"),
        Character(tag="Person3", appearance="an elderly man with a bald head, a grey cardigan, a walking cane",
                  position="right", facing="camera", emotion="amused", actions=["chuckles"],
                  body_language="relaxed, hands folded on the cane"),
    ]
    env = Environment(setting="a cramped wood-panelled office with a rain-streaked window", lighting="dim tungsten light")
    cams = [Camera(shot_size="medium", angle="eye_level", movement="static"),
            Camera(shot_size="close_up", angle="low", movement="zoom"),
            Camera(shot_size="wide", angle="high", movement="pan")]
    return [Caption(characters=people, environment=env, camera=c, summary="An argument breaks out over a contract")
            for c in cams]


@pytest.mark.parametrize("budget", [256, 160, 96])
def test_budget_respected_with_t5_tokenizer(budget, t5_tokenizer):
    caps = big_captions()
    full = render_prompt(caps, t5_tokenizer, budget=10_000)
    assert full.num_tokens > 256  # the case needs dropping at every budget tested
    r = render_prompt(caps, t5_tokenizer, budget=budget)
    ids = t5_tokenizer(r.text)["input_ids"]
    assert r.fits and len(ids) == r.num_tokens <= budget
    assert r.dropped[0] == "summary:clip2"  # least important first, latest clip first among equals
    defined, used = tag_report(r.text)
    assert defined == ["Person1", "Person2", "Person3"]
    assert used == set(defined)
    for line in r.text.splitlines()[-3:]:  # every clip line still names all its characters
        assert all(f"{t} " in line or f"{t}." in line for t in defined)
    # the speaking state is the last thing to go
    if budget >= 160:
        assert "Person1 (" in r.text or "Person1 talks" in r.text
        assert r.text.count("talks") == 3


def test_skeleton_that_cannot_fit_keeps_every_tag(t5_tokenizer):
    r = render_prompt(big_captions(), t5_tokenizer, budget=20)
    assert not r.fits and r.num_tokens > 20
    defined, used = tag_report(r.text)
    assert defined == ["Person1", "Person2", "Person3"] and used == set(defined)
    assert "Third clip: Person1. Person2. Person3." in r.text


def test_count_tokens_accepts_tokenizer_protocols(t5_tokenizer):
    text = GOLDEN_1CLIP_2CHAR
    n = len(t5_tokenizer(text)["input_ids"])
    assert count_tokens(text, t5_tokenizer) == n
    assert count_tokens(text, t5_tokenizer.backend_tokenizer) == n  # tokenizers.Tokenizer: Encoding.ids

    class CallOnly:
        def __call__(self, s):
            return {"input_ids": s.split()}

    assert count_tokens("a b c", CallOnly()) == 3
    with pytest.raises(TypeError):
        count_tokens("x", object())
    # without a tokenizer: an estimate that grows with the text
    assert 0 < count_tokens("One video clip.") < count_tokens(text)


names = st.sampled_from(["a man", "a woman with long hair, a red dress", "a child; blue cap, striped shirt", "a robot"])
opt = lambda s: st.one_of(st.none(), s)  # noqa: E731
character_attrs = st.fixed_dictionaries({
    "appearance": names,
    "position": opt(st.sampled_from(["left", "center", "right"])),
    "facing": opt(st.sampled_from(["camera", "left", "away"])),
    "emotion": opt(st.sampled_from(["calm", "angry"])),
    "speaking": st.booleans(),
    "actions": st.lists(st.sampled_from(["nods", "waves", "sits down"]), max_size=3),
    "body_language": opt(st.just("arms crossed")),
})


@st.composite
def caption_lists(draw):
    n_clips = draw(st.integers(1, 3))
    n_chars = draw(st.integers(1, 3))
    caps = []
    for _ in range(n_clips):
        chars = [Character(tag=f"Person{i + 1}", **draw(character_attrs)) for i in range(n_chars)]
        caps.append(Caption(characters=chars, camera=Camera(shot_size=draw(opt(st.sampled_from(["wide", "medium"])))),
                            environment=Environment(setting=draw(opt(st.just("a park")))),
                            summary=draw(opt(st.just("They talk")))))
    return caps


@settings(max_examples=60, deadline=None)
@given(caption_lists(), st.integers(8, 300))
def test_tags_never_dropped_or_undefined(caps, budget):
    r = render_prompt(caps, None, budget=budget)
    defined, used = tag_report(r.text)
    tags = sorted({c.tag for cap in caps for c in cap.characters})
    assert sorted(defined) == tags and len(defined) == len(set(defined))  # each tag defined once
    assert used == set(tags)
    assert r.num_tokens == count_tokens(r.text)
    assert (r.num_tokens <= budget) == r.fits
    assert len(re.findall(r"^\w+ clip:", r.text, re.M)) == len(caps)


def test_render_from_json_for_generate(t5_tokenizer):
    doc = {"clips": [STREET.model_dump(mode="json"),
                     {"characters": [{"tag": "Person2", "appearance": "a girl", "emotion": "worried", "speaking": True}],
                      "camera": {"shot_size": "close_up"}}]}
    import json

    assert render_from_json(json.dumps(doc), t5_tokenizer).text == GOLDEN_2CLIP_2CHAR
    assert render_from_json(STUDIO.model_dump(mode="json")).text == GOLDEN_1CLIP_1CHAR
    with pytest.raises(ValueError, match="unknown caption keys"):
        render_from_json({"characters": [], "mood": "x"})
    with pytest.raises(ValueError):
        render_from_json([{"characters": [{"tag": "Bob", "appearance": "x"}]}])
    with pytest.raises(ValueError, match="twice"):
        render_from_json([{"characters": [{"tag": "Person1", "appearance": "x"}, {"tag": "Person1", "appearance": "y"}]}])


def test_turn_order_is_rendered_and_kept_under_a_tight_budget(t5_tokenizer):
    from schemas.caption import Turn

    cap = Caption(characters=[Character(tag="Person1", appearance="a man with a beard, a black sweater", position="left",
                                        speaking=True, actions=["gestures"], body_language="relaxed"),
                              Character(tag="Person2", appearance="a woman with red hair", position="right",
                                        speaking=True)],
                  environment=Environment(setting="a kitchen", lighting="warm light"),
                  camera=Camera(shot_size="medium", angle="eye_level"),
                  turns=[Turn(tag="Person2", start_s=0.0, end_s=2.0), Turn(tag="Person1", start_s=2.1, end_s=4.0),
                         Turn(tag="Person2", start_s=4.2, end_s=5.0)])
    full = render_prompt(cap, t5_tokenizer, budget=256)
    assert full.text.endswith("Person2 speaks first, then Person1, then Person2.")
    tight = render_prompt(cap, t5_tokenizer, budget=full.num_tokens - 12)
    assert tight.fits and "Person2 speaks first, then Person1, then Person2." in tight.text
    assert not any(d.startswith("turns") for d in tight.dropped)
    # one speaker only: no order sentence
    solo = cap.model_copy(update={"turns": [Turn(tag="Person1", start_s=0.0, end_s=4.0)]})
    assert "speaks first" not in render_prompt(solo, t5_tokenizer).text
    # and a user's caption JSON for `mocha generate` may give turns too
    doc = {"clips": [json.loads(cap.model_dump_json())]}
    assert render_from_json(doc, t5_tokenizer).text == full.text
