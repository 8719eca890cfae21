"""A plain pandas implementation of the published steps, written independently of the service.

It is the yardstick, not part of serving: tests compare the service's numbers with it, and the
benchmarks compare the service's speed with it.  It is what a typical Flask model API does:
build a DataFrame from the request, clean x12 and x63 with string operations, run the pickled
imputer and scaler, make dummies with pandas, and call the statsmodels model's predict.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
from statsmodels.iolib.smpickle import load_pickle

CATEGORICAL = ["x5", "x31", "x81", "x82"]


class PandasReference:
    def __init__(self, model_dir: Path | str) -> None:
        model_dir = Path(model_dir)
        with open(model_dir / "imputer.pkl", "rb") as f:
            self.imputer = pickle.load(f)
        with open(model_dir / "std_scaler.pkl", "rb") as f:
            self.scaler = pickle.load(f)
        with open(model_dir / "variables.pickle", "rb") as f:
            self.variables = pickle.load(f)
        self.model = load_pickle(str(model_dir / "ad_purchase_model.pickle"))
        self.cutoff = json.loads((model_dir / "metadata.json").read_text())["cutoff"]

    def predict(self, records: list[dict]) -> list[dict]:
        df = pd.DataFrame(records).astype(object)
        df = df.replace({None: np.nan})
        df = df.map(lambda v: np.nan if isinstance(v, str) and v.strip().lower() in ("", "nan", "na") else v)
        x12 = df["x12"].astype(str).str.strip()
        negative = x12.str.startswith("(")
        x12 = x12.str.replace(r"[$,() ]", "", regex=True).astype(float)
        df["x12"] = np.where(negative, -x12, x12)
        df["x63"] = df["x63"].astype(str).str.rstrip("%").astype(float)
        numeric_columns = list(self.imputer.feature_names_in_)
        numeric = df[numeric_columns].astype(float)
        imputed = pd.DataFrame(self.imputer.transform(numeric), columns=numeric_columns)
        scaled = pd.DataFrame(self.scaler.transform(imputed.to_numpy()), columns=numeric_columns)
        # DataFrame.map above re-infers dtypes (a column may come back as strings or, when every
        # value is missing, as floats); strip and case-fold on object columns so both work.
        categories = df[CATEGORICAL].astype(object).apply(lambda c: c.str.strip())
        categories["x5"] = categories["x5"].str.lower()
        categories["x31"] = categories["x31"].str.lower()
        categories["x81"] = categories["x81"].str.capitalize()
        categories["x82"] = categories["x82"].str.capitalize()
        dummies = pd.get_dummies(categories, dummy_na=True, dtype=float)
        inputs = pd.concat([scaled, dummies], axis=1).reindex(columns=self.variables, fill_value=0.0)
        phat = np.asarray(self.model.predict(inputs))
        out = inputs.astype(float)
        out["phat"] = phat
        out["business_outcome"] = (phat >= self.cutoff).astype(int)
        out = out[sorted(out.columns)]
        return out.to_dict(orient="records")
