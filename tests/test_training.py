"""The training pipeline: reading and checking raw rows, the published fitting method, the
artifacts and report it writes, and the atomic replacement of the artifact folder."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import StandardScaler
from statsmodels.iolib.smpickle import load_pickle

from ad_purchase.training import synthetic
from ad_purchase.training import data as training_data
from ad_purchase.training import fit, save
from ad_purchase.model.artifacts import (ARTIFACT_FILES, IMPUTER_FILE, METADATA_FILE, MODEL_FILE, SCALER_FILE,
                       VARIABLES_FILE)
from ad_purchase.schema import CATEGORICAL_FIELDS, NUMERIC_FIELDS, TARGET, all_model_columns, split_dummy
from ad_purchase.resources import Profile

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METADATA_KEYS = {
    "model_name", "model_version", "trained_at", "training_data", "library_versions", "rows",
    "class_balance", "cutoff_percentile", "cutoff", "auc", "features", "coefficients",
    "numeric_fields", "categorical_fields", "artifacts",
}


def _read(path: Path) -> training_data.ParsedData:
    return training_data.parse_raw(training_data.read_raw_csv(path))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _design(data: training_data.ParsedData, imputer, scaler, features: list[str]) -> pd.DataFrame:
    """The model inputs built from the saved imputer and scaler, one-hot coded here by hand."""
    scaled = pd.DataFrame(scaler.transform(imputer.transform(data.numeric)), columns=list(NUMERIC_FIELDS))
    columns = {}
    for name in features:
        parts = split_dummy(name)
        if parts is None:
            columns[name] = scaled[name].to_numpy()
        else:
            field, level = parts
            values = data.categorical[field]
            columns[name] = (values.isna() if level is None else values == level).to_numpy(dtype=float)
    return pd.DataFrame(columns)


# =========================================================================== the session's model

@pytest.fixture(scope="module")
def training_rows(trained_run) -> training_data.ParsedData:
    return _read(trained_run.csv_path)


@pytest.fixture(scope="module")
def metadata(trained_dir) -> dict:
    return json.loads((trained_dir / METADATA_FILE).read_text())


@pytest.fixture(scope="module")
def saved(trained_dir):
    def unpickle(name):
        with open(trained_dir / name, "rb") as handle:
            return pickle.load(handle)
    return (unpickle(IMPUTER_FILE), unpickle(SCALER_FILE), unpickle(VARIABLES_FILE),
            load_pickle(str(trained_dir / MODEL_FILE)))


def test_artifact_files_are_written(trained_dir):
    names = {p.name for p in trained_dir.iterdir()}
    assert names == {*ARTIFACT_FILES, METADATA_FILE, "report"}
    assert all((trained_dir / name).stat().st_size > 0 for name in (*ARTIFACT_FILES, METADATA_FILE))


def test_imputer_is_a_mean_imputer_of_the_96_numeric_fields(saved, training_rows):
    imputer = saved[0]
    assert isinstance(imputer, SimpleImputer)
    assert imputer.strategy == "mean"
    assert imputer.n_features_in_ == 96
    assert list(imputer.feature_names_in_) == list(NUMERIC_FIELDS)
    np.testing.assert_allclose(imputer.statistics_, np.nanmean(training_rows.numeric.to_numpy(), axis=0),
                               rtol=1e-12)


def test_scaler_standardises_the_imputed_fields(saved, training_rows):
    imputer, scaler = saved[0], saved[1]
    assert isinstance(scaler, StandardScaler)
    assert scaler.n_features_in_ == 96
    imputed = imputer.transform(training_rows.numeric)
    np.testing.assert_allclose(scaler.mean_, imputed.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(scaler.scale_, imputed.std(axis=0), rtol=1e-9)


def test_variables_are_25_distinct_model_columns(saved, metadata):
    features = saved[2]
    assert isinstance(features, list) and len(features) == 25
    assert len(set(features)) == 25
    assert set(features) <= set(all_model_columns())
    assert features == metadata["features"]


def test_model_pickle_holds_the_logit_on_the_selected_features(saved, metadata):
    model, features = saved[3], saved[2]
    params = model.params
    assert list(params.index) == features
    for name in features:
        assert params[name] == pytest.approx(metadata["coefficients"][name]["coef"], rel=1e-12)
        assert model.bse[name] == pytest.approx(metadata["coefficients"][name]["std_err"], rel=1e-12)
        assert metadata["coefficients"][name]["std_err"] > 0
    assert "const" not in params.index  # fitted without an intercept


def test_metadata_keys_and_values(metadata, trained_run, training_rows):
    assert set(metadata) == METADATA_KEYS
    assert metadata["model_name"] == save.MODEL_NAME
    assert metadata["model_version"] == trained_run.model_version
    assert metadata["training_data"] == str(trained_run.csv_path)
    assert datetime.fromisoformat(metadata["trained_at"]).tzinfo is not None
    assert {"python", "numpy", "pandas", "scikit-learn", "statsmodels"} <= set(metadata["library_versions"])
    assert metadata["rows"] == trained_run.rows
    buyers = int(pd.read_csv(trained_run.csv_path, usecols=[TARGET])[TARGET].sum())
    assert metadata["class_balance"] == {"1": buyers, "0": trained_run.rows - buyers}
    assert metadata["cutoff_percentile"] == 75
    assert 0.7 < metadata["auc"]["held_out"] < 1
    assert 0.7 < metadata["auc"]["all_rows_refit"] < 1
    assert set(metadata["coefficients"]) == set(metadata["features"])


def test_small_sample_already_finds_most_published_features(metadata):
    """3,000 rows are too few for the full acceptance check, but most of the published features
    stand out already; a broken design matrix (say, a category never coded) would not."""
    published = Profile.load().coefficients
    assert sum(f in published for f in metadata["features"]) >= 18
    strong = [name for name in metadata["features"] if abs(published.get(name, {}).get("coef", 0)) >= 0.5]
    assert len(strong) >= 8
    for name in strong:  # effects this large are several standard errors from zero at 3,000 rows
        assert np.sign(metadata["coefficients"][name]["coef"]) == np.sign(published[name]["coef"]), name


def test_metadata_field_profiles(metadata, training_rows):
    numeric = metadata["numeric_fields"]
    assert list(numeric) == list(NUMERIC_FIELDS)
    for field, stats in numeric.items():
        column = training_rows.numeric[field].to_numpy()
        assert stats["mean"] == pytest.approx(np.nanmean(column), rel=1e-9, abs=1e-12)
        assert stats["missing_rate"] == pytest.approx(np.isnan(column).mean())
        assert stats["std"] > 0
        assert stats["edges"] == sorted(stats["edges"]) and len(stats["shares"]) == len(stats["edges"]) + 1
        assert sum(stats["shares"]) == pytest.approx(1)
    for field in CATEGORICAL_FIELDS:
        shares = metadata["categorical_fields"][field]
        assert sum(shares.values()) == pytest.approx(1)
        counts = training_rows.categorical[field].fillna("nan").value_counts(normalize=True)
        assert shares == pytest.approx(counts.to_dict())


def test_metadata_records_the_sha256_of_every_artifact(metadata, trained_dir):
    assert set(metadata["artifacts"]) == set(ARTIFACT_FILES)
    for name in ARTIFACT_FILES:
        assert metadata["artifacts"][name] == _sha256(trained_dir / name), name


def test_cutoff_is_the_75th_percentile_of_training_predictions(saved, metadata, training_rows):
    imputer, scaler, features, model = saved
    phat = np.asarray(model.predict(_design(training_rows, imputer, scaler, features)))
    assert len(phat) == len(training_rows.target)
    assert metadata["cutoff"] == pytest.approx(np.percentile(phat, 75), rel=1e-9)
    assert 0.245 <= (phat > metadata["cutoff"]).mean() <= 0.255


def test_report_is_written(trained_dir, metadata):
    folder = trained_dir / "report"
    assert {p.name for p in folder.iterdir()} == {"roc.png", "lift.png", "calibration.png",
                                                   "coefficients.png", "REPORT.md"}
    for chart in ("roc.png", "lift.png", "calibration.png", "coefficients.png"):
        data = (folder / chart).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5_000, chart
    text = (folder / "REPORT.md").read_text()
    shared = [f for f in metadata["features"] if f in Profile.load().coefficients]
    assert metadata["model_version"] in text
    assert f"{metadata['auc']['held_out']:.4f}" in text
    assert f"{metadata['cutoff']:.4f}" in text
    assert f"{len(shared)} of 25" in text
    for chart in ("roc.png", "lift.png", "calibration.png", "coefficients.png"):
        assert f"({chart})" in text


# =========================================================================== reading and checks

@pytest.fixture(scope="module")
def raw_rows() -> pd.DataFrame:
    return synthetic.generate(60, seed=31)


def _write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


def test_parse_raw_reads_every_spelling(raw_rows, tmp_path):
    data = _read(_write(raw_rows, tmp_path / "rows.csv"))
    assert list(data.numeric.columns) == list(NUMERIC_FIELDS)
    assert data.numeric.dtypes.map(pd.api.types.is_float_dtype).all()
    assert list(data.categorical.columns) == list(CATEGORICAL_FIELDS)
    np.testing.assert_array_equal(data.target, raw_rows[TARGET].to_numpy())
    expected_x12 = [np.nan if v == "nan" else float(v.strip().replace("$", "").replace(",", "")
                                                    .replace("(", "-").replace(")", ""))
                    for v in raw_rows["x12"]]
    np.testing.assert_array_equal(data.numeric["x12"].to_numpy(), np.array(expected_x12))
    expected_x63 = [np.nan if v == "nan" else float(v.rstrip("%")) for v in raw_rows["x63"]]
    np.testing.assert_array_equal(data.numeric["x63"].to_numpy(), np.array(expected_x63))


def test_parse_raw_accepts_other_spellings_of_missing_and_levels(raw_rows, tmp_path):
    frame = raw_rows.copy()
    frame.loc[0, "x0"], frame.loc[1, "x0"], frame.loc[2, "x0"] = "NaN", "NA", ""
    frame.loc[3, "x1"], frame.loc[4, "x12"], frame.loc[5, "x63"] = " nan ", "NA", "NaN"
    frame.loc[0, "x5"], frame.loc[1, "x81"], frame.loc[2, "x31"] = "  SUNDAY ", "november", "NaN"
    data = _read(_write(frame, tmp_path / "rows.csv"))
    assert data.numeric["x0"].iloc[:3].isna().all()
    assert np.isnan(data.numeric["x1"].iat[3]) and np.isfinite(data.numeric["x1"].drop(index=3)).sum() > 50
    assert np.isnan(data.numeric["x12"].iat[4]) and np.isnan(data.numeric["x63"].iat[5])
    assert data.categorical["x5"].iat[0] == "sunday"
    assert data.categorical["x81"].iat[1] == "November"
    assert data.categorical["x31"].iat[2] is None or pd.isna(data.categorical["x31"].iat[2])


def test_parse_raw_reports_every_bad_value_with_row_and_value(raw_rows, tmp_path):
    frame = raw_rows.copy()
    frame.loc[3, "x12"] = "$1,2x"
    frame.loc[5, "x63"] = "abc%"
    frame.loc[7, "x5"] = "funday"
    frame.loc[9, TARGET] = 2
    frame.loc[11, "x40"] = "inf"
    with pytest.raises(training_data.TrainingDataError) as caught:
        _read(_write(frame, tmp_path / "rows.csv"))
    message = str(caught.value)
    assert message.startswith("5 bad value(s)")
    for expected in ("row 4 (line 5), x12='$1,2x'", "row 6 (line 7), x63='abc%'", "row 8 (line 9), x5='funday'",
                     "row 10 (line 11), y='2'", "row 12 (line 13), x40="):
        assert expected in message


def test_parse_raw_caps_the_number_of_reported_errors(raw_rows, tmp_path):
    frame = raw_rows.copy()
    frame["x5"] = "funday"
    with pytest.raises(training_data.TrainingDataError) as caught:
        _read(_write(frame, tmp_path / "rows.csv"))
    message = str(caught.value)
    assert message.startswith(f"{len(frame)} bad value(s)")
    assert message.count("x5='funday'") == training_data.SHOWN_ERRORS
    assert f"and {len(frame) - training_data.SHOWN_ERRORS} more" in message


def test_parse_raw_needs_both_classes(raw_rows, tmp_path):
    frame = raw_rows.copy()
    frame[TARGET] = 1
    with pytest.raises(training_data.TrainingDataError, match="single class"):
        _read(_write(frame, tmp_path / "rows.csv"))


def test_read_raw_csv_with_a_header_but_no_rows(raw_rows, tmp_path):
    with pytest.raises(training_data.TrainingDataError, match="no rows"):
        training_data.read_raw_csv(_write(raw_rows.head(0), tmp_path / "rows.csv"))


# =========================================================================== atomic artifact writes

@pytest.fixture(scope="module")
def small_fit(tmp_path_factory, write_synthetic_csv):
    path = write_synthetic_csv(tmp_path_factory.mktemp("small") / "rows.csv", 1200, 12)
    data = _read(path)
    outcome = fit.train(data, seed=12)
    return outcome, save.build_metadata(outcome, data, str(path), "1.0.0")


@pytest.fixture
def existing_model(tmp_path, small_fit):
    """An artifact folder from an earlier run, with files the team keeps beside the artifacts."""
    outcome, metadata = small_fit
    out = tmp_path / "models" / "current"
    save.write_artifacts(outcome, metadata, out)
    (out / "NOTES.txt").write_text("deployed by ops; do not delete\n")
    (out / "extra").mkdir()
    (out / "extra" / "blob.bin").write_bytes(bytes(range(256)) * 4)
    return out


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p != out)


@pytest.mark.parametrize("failure", [RuntimeError("disk full while writing the report"), KeyboardInterrupt()])
def test_failure_while_writing_leaves_the_folder_unchanged(existing_model, small_fit, tree_snapshot, failure):
    outcome, metadata = small_fit
    before = tree_snapshot(existing_model)
    staged = {}

    def fail_half_way(staging: Path, written: dict) -> None:
        staged["folder"] = staging
        assert {*ARTIFACT_FILES, METADATA_FILE} <= {p.name for p in staging.iterdir()}
        (staging / "report").mkdir()
        (staging / "report" / "roc.png").write_bytes(PNG_SIGNATURE)
        raise failure

    with pytest.raises(type(failure)):
        save.write_artifacts(outcome, dict(metadata, model_version="2.0.0"), existing_model, extra=fail_half_way)
    assert tree_snapshot(existing_model) == before
    assert not staged["folder"].exists()
    assert _leftovers(existing_model) == []


def test_failure_on_a_first_write_creates_nothing(tmp_path, small_fit):
    outcome, metadata = small_fit
    out = tmp_path / "models" / "new"

    def fail(_: Path, __: dict) -> None:
        raise OSError("no space left on device")

    with pytest.raises(OSError):
        save.write_artifacts(outcome, metadata, out, extra=fail)
    assert not out.exists()
    assert list(out.parent.iterdir()) == []


def test_failure_of_the_final_rename_leaves_the_folder_unchanged(existing_model, small_fit, tree_snapshot,
                                                                 monkeypatch):
    outcome, metadata = small_fit
    before = tree_snapshot(existing_model)
    real_replace = os.replace

    def replace(src, dst):
        if Path(src).parent.name.startswith(f".{existing_model.name}.") and Path(src).name == existing_model.name:
            raise OSError("simulated failure of the rename into place")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="simulated"):
        save.write_artifacts(outcome, dict(metadata, model_version="2.0.0"), existing_model)
    monkeypatch.undo()
    assert tree_snapshot(existing_model) == before
    assert _leftovers(existing_model) == []


def test_retrain_replaces_artifacts_and_keeps_unrelated_files(existing_model, small_fit, tree_snapshot):
    outcome, metadata = small_fit
    before = tree_snapshot(existing_model)
    save.write_artifacts(outcome, dict(metadata, model_version="2.0.0"), existing_model,
                         extra=lambda staging, _: (staging / "report").mkdir())
    after = tree_snapshot(existing_model)
    for kept in ("NOTES.txt", "extra", "extra/blob.bin"):
        assert after[kept] == before[kept]
    assert json.loads(after[METADATA_FILE])["model_version"] == "2.0.0"
    assert "report" in after
    recorded = json.loads(after[METADATA_FILE])["artifacts"]
    assert all(recorded[n] == hashlib.sha256(after[n]).hexdigest() for n in ARTIFACT_FILES)
    assert _leftovers(existing_model) == []


# =========================================================================== the published method

def test_training_twice_gives_the_same_model(tmp_path, write_synthetic_csv):
    path = write_synthetic_csv(tmp_path / "rows.csv", 1000, 21)
    messages: list[str] = []
    first = fit.train(_read(path), seed=21, progress=messages.append)
    second = fit.train(_read(path), seed=21)
    assert first.model.features == second.model.features
    np.testing.assert_allclose(first.model.results.params.to_numpy(), second.model.results.params.to_numpy(),
                               rtol=0, atol=1e-9)
    np.testing.assert_allclose(first.model.train_phat, second.model.train_phat, rtol=0, atol=1e-9)
    assert first.held_out_auc == pytest.approx(second.held_out_auc, abs=1e-12)
    assert any("held-out AUC" in m for m in messages) and any("L1 selection" in m for m in messages)


@pytest.mark.slow
def test_published_acceptance_on_40000_rows(tmp_path, write_synthetic_csv):
    """At least 23 of the 25 published features, every shared coefficient within 4 published
    standard errors, and a held-out AUC within 0.02 of 0.80."""
    path = write_synthetic_csv(tmp_path / "rows.csv", 40_000, 11)
    outcome = fit.train(_read(path), seed=11)
    published = Profile.load().coefficients
    features = outcome.model.features
    shared = [f for f in features if f in published]
    assert len(features) == 25
    assert len(shared) >= 23, sorted(set(published) - set(features))
    params = outcome.model.results.params
    gaps = {f: abs(params[f] - published[f]["coef"]) / published[f]["std_err"] for f in shared}
    assert max(gaps.values()) <= 4, gaps
    assert abs(outcome.held_out_auc - 0.80) <= 0.02


def test_check_size_refuses_too_few_rows():
    """A handful of rows would fit a meaningless model; training refuses them up front."""
    from ad_purchase.training.data import MIN_ROWS, ParsedData, TrainingDataError, check_size
    import numpy as np
    import pandas as pd

    def rows(n: int) -> ParsedData:
        return ParsedData(pd.DataFrame(), pd.DataFrame(), np.arange(n) % 2)

    check_size(rows(MIN_ROWS))
    with pytest.raises(TrainingDataError, match=f"at least {MIN_ROWS}"):
        check_size(rows(MIN_ROWS - 1))
