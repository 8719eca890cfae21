"""model_utils.py, the model's pipeline as the design card names it: load the verified artifacts
and score raw records, with the answers the plain pandas implementation gives."""
from __future__ import annotations

import math

import pytest

import model_utils
from ad_purchase.schema import InputError
from ad_purchase.training import synthetic
from api_support import MODEL_DIR, example
from pandas_reference import PandasReference

TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def model():
    return model_utils.load(MODEL_DIR)


def test_predict_gives_the_reference_answers_in_order(model):
    records = [*example("batch"), *synthetic.generate(50, seed=3).drop(columns=["y"]).to_dict("records")]
    got = model_utils.predict(model, records)
    expected = PandasReference(MODEL_DIR).predict(records)
    assert len(got) == len(expected) == len(records)
    for mine, theirs in zip(got, expected):
        assert list(mine) == sorted(mine)                       # keys in alphabetical order
        assert mine.keys() == theirs.keys()
        assert mine["business_outcome"] == theirs["business_outcome"]
        for key in mine:
            assert math.isclose(mine[key], theirs[key], rel_tol=0, abs_tol=TOLERANCE), key


def test_a_bad_record_raises_naming_the_field(model):
    record = dict(example("single"), x12="$1.234,56")
    with pytest.raises(InputError) as raised:
        model_utils.predict(model, [record])
    assert [(e["row"], e["field"], e["value"]) for e in raised.value.errors] == [(0, "x12", "$1.234,56")]


def test_load_refuses_a_folder_without_artifacts(tmp_path):
    with pytest.raises(model_utils.ArtifactError):
        model_utils.load(tmp_path)
