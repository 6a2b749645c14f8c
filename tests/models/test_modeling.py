"""Model loading: what a SPEC means (a local folder or a hub id) and how a bad one fails."""

from __future__ import annotations

import pytest

from medchat.errors import MedchatError


@pytest.mark.parametrize(
    ("spec", "is_path"),
    [
        ("./run", True),
        ("../runs/full", True),
        ("/abs/run", True),
        ("~/runs/full", True),
        ("a/b/c", True),
        ("runs/ful", True),  # runs/ exists here (the test makes it)
        ("google/flan-t5-base", False),
        ("t5-small", False),
    ],
)
def test_a_spec_reads_as_a_path_or_a_hub_id(spec, is_path, tmp_path, monkeypatch) -> None:
    from medchat.runs import reads_as_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert reads_as_path(spec) is is_path


def test_a_missing_folder_is_never_looked_up_on_the_hub(tmp_path, monkeypatch) -> None:
    from medchat.models.modeling import load_model_spec

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(MedchatError, match=r"runs/ful: no such folder .*not looked up"):
        load_model_spec("runs/ful")


def test_an_unfetchable_hub_id_names_both_readings(monkeypatch, tmp_path) -> None:
    from medchat.models.modeling import load_pretrained

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        MedchatError, match=r"no folder 'nobody/no-such-model' here, and as a Hugging Face hub id"
    ):
        load_pretrained("nobody/no-such-model")
