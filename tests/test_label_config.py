import pytest
from label_studio_sdk.label_interface import LabelInterface

from label_config import (
    FLAG_NOT_SPEECH,
    FLAG_TWO_SPEAKERS,
    UNKNOWN_CHOICE,
    append_speakers,
    clean_speaker_name,
    flags_from_annotation,
    load_config,
    speaker_from_annotation,
    speaker_prediction,
    speakers_in_config,
)


def test_shipped_config_lists_only_unknown_and_passes_sdk_validation():
    config = load_config()
    assert speakers_in_config(config) == [UNKNOWN_CHOICE]
    interface = LabelInterface(config)
    interface.validate()
    assert {"audio", "image", "text"} <= {obj.name for obj in interface.objects}
    assert {"speaker", "new_speaker", "line_flags"} <= {c.name for c in interface.controls}
    assert interface.get_control("speaker").to_name == ["audio"]


def test_load_config_keeps_order_and_drops_duplicates():
    config = load_config(["Mika", "Ren", "Mika", UNKNOWN_CHOICE, "Aoi"])
    assert speakers_in_config(config) == [UNKNOWN_CHOICE, "Mika", "Ren", "Aoi"]


@pytest.mark.parametrize(
    "name",
    ["鈴木", 'Tom & "Jerry"', "<script>alert(1)</script>", "O'Neil", "Zoë ]]> --> <!--"],
)
def test_names_with_xml_special_characters_round_trip(name):
    config = load_config([name])
    assert speakers_in_config(config) == [UNKNOWN_CHOICE, name]
    interface = LabelInterface(config)
    interface.validate()
    assert interface.validate_prediction({"result": speaker_prediction(name)})


def test_a_prediction_for_a_listed_speaker_is_valid():
    interface = LabelInterface(load_config(["Mika", "鈴木"]))
    assert interface.validate_prediction({"result": speaker_prediction("鈴木", score=0.8)})


def test_a_prediction_for_an_unlisted_speaker_is_rejected():
    interface = LabelInterface(load_config(["Mika"]))
    errors = interface.validate_prediction(
        {"result": speaker_prediction("Ren")}, return_errors=True
    )
    assert errors and "Ren" in errors[0]


def test_a_prediction_aimed_at_the_wrong_object_is_rejected():
    interface = LabelInterface(load_config(["Mika"]))
    result = speaker_prediction("Mika")
    result[0]["to_name"] = "image"
    errors = interface.validate_prediction({"result": result}, return_errors=True)
    assert errors and "to_name" in errors[0]


def test_speaker_prediction_shape():
    assert speaker_prediction("  Mika\n", score=0.25) == [
        {
            "from_name": "speaker",
            "to_name": "audio",
            "type": "choices",
            "value": {"choices": ["Mika"]},
            "score": 0.25,
        }
    ]
    assert "score" not in speaker_prediction("Mika")[0]


@pytest.mark.parametrize("score", [-0.1, 1.5, float("nan"), "high"])
def test_speaker_prediction_rejects_a_score_that_is_not_a_probability(score):
    with pytest.raises(ValueError, match="not a probability"):
        speaker_prediction("Mika", score=score)


def test_append_speakers_only_appends():
    config = load_config(["Mika", "Ren"])
    grown = append_speakers(config, ["Aoi", "Mika", "Ren", "鈴木"])
    assert speakers_in_config(grown) == [UNKNOWN_CHOICE, "Mika", "Ren", "Aoi", "鈴木"]
    # Everything outside the inserted choices is kept byte for byte.
    assert grown.startswith(config[: config.index("  </Choices>")])
    assert grown.endswith(config[config.index("  </Choices>") :])


def test_append_speakers_is_idempotent():
    config = load_config(["Mika"])
    once = append_speakers(config, ["Ren", "鈴木"])
    assert append_speakers(once, ["Ren", "鈴木"]) == once
    assert append_speakers(once, []) == once


def test_append_speakers_keeps_choices_a_user_added_by_hand():
    config = load_config(["Mika"]).replace(
        '<Choice value="Mika"/>', '<Choice value="Narrator"/><Choice value="Mika"/>'
    )
    grown = append_speakers(config, ["Ren"])
    assert speakers_in_config(grown) == [UNKNOWN_CHOICE, "Narrator", "Mika", "Ren"]


def test_append_speakers_on_a_single_line_config():
    config = (
        '<View><Audio name="audio" value="$audio"/><Choices name="speaker" toName="audio">'
        '<Choice value="Unknown"/></Choices></View>'
    )
    grown = append_speakers(config, ["A&B"])
    assert grown == config.replace("</Choices>", '<Choice value="A&amp;B"/></Choices>')
    LabelInterface(grown).validate()


def test_append_speakers_leaves_other_choices_alone():
    grown = append_speakers(load_config(), ["Mika"])
    flags = LabelInterface(grown).get_control("line_flags")
    assert flags.labels == [FLAG_TWO_SPEAKERS, FLAG_NOT_SPEECH]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("<View><Choices", "not well-formed"),
        (
            '<View><Choices name="mood" toName="a"><Choice value="x"/></Choices></View>',
            "no <Choices",
        ),
        ('<View><Choices name="speaker" toName="audio"/></View>', "is empty"),
    ],
)
def test_append_speakers_rejects_a_config_without_a_usable_speaker_list(config, message):
    with pytest.raises(ValueError, match=message):
        append_speakers(config, ["Mika"])


@pytest.mark.parametrize(("name", "message"), [("   ", "is empty"), ("a\x00b", "XML cannot")])
def test_unusable_speaker_names_are_refused(name, message):
    with pytest.raises(ValueError, match=message):
        clean_speaker_name(name)


def test_append_speakers_refuses_a_bare_string():
    with pytest.raises(TypeError, match="not a single string"):
        append_speakers(load_config(), "Mika")


def test_speaker_from_annotation_prefers_a_typed_new_name():
    result = [
        *speaker_prediction("Mika"),
        {
            "from_name": "new_speaker",
            "to_name": "audio",
            "type": "textarea",
            "value": {"text": [" 鈴木 \n"]},
        },
        {
            "from_name": "line_flags",
            "to_name": "audio",
            "type": "choices",
            "value": {"choices": [FLAG_TWO_SPEAKERS]},
        },
    ]
    assert speaker_from_annotation(result) == "鈴木"
    assert speaker_from_annotation(speaker_prediction("Mika")) == "Mika"
    assert speaker_from_annotation([]) is None
    assert flags_from_annotation(result) == [FLAG_TWO_SPEAKERS]
