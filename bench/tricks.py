#!/usr/bin/env python
"""Does each speed trick still pay?  An A/B of every trick the code keeps against the plain code
it replaces, on the path it serves, in one run with the two sides' repetitions interleaved.

  one-record reading  Decoder.decode_record vs the batch decode of a one-element array, on the
                      request path of a single record (decode, predict, observe, encode)
  typed CSV pieces    plain numeric fields converted by the CSV reader vs read as text, on
                      score.py CSV -> CSV

A trick stays while it saves at least a tenth of its path's time (the share printed is the
median over rounds of 1 - with/without, by CPU time).  Usage:
    .venv/bin/python bench/tricks.py [--quick]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import resource
import tempfile
import time

import pyarrow as pa
from pathlib import Path

from benchlib import MODEL_DIR, SEED, median, print_table, save_results, say, scoring_path

from ad_purchase.batch.local import score_file  # noqa: E402
from ad_purchase.codecs import csv_codec, json_codec  # noqa: E402
from ad_purchase.model import load_model  # noqa: E402
from ad_purchase.training import synthetic  # noqa: E402

MIN_SHARE = 0.10


def cpu() -> float:
    """CPU seconds of this process, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(run) -> tuple[float, float]:
    wall, started = time.perf_counter(), cpu()
    run()
    return time.perf_counter() - wall, cpu() - started


# ------------------------------------------------------------------ the plain code each trick replaces

@contextlib.contextmanager
def without_one_record_reading():
    """A one-record body read as the one-element array it is, by the batch decode."""
    original = json_codec.JsonDecoder._decode_one

    def as_batch(self, record):
        columns = self.decoder.decode(
            {**dict(zip(self._plain_inputs, self._plain_reader.read([record]).T)),
             **{f: [getter(record)] for f, getter in self._text_getters.items()}},
            1, vouched=self._vouched, vouched_sample=self._vouched_reader.read([record]), single=True)
        if columns.total:
            raise json_codec._ReadAsSent
        return columns.columns
    json_codec.JsonDecoder._decode_one = as_batch
    try:
        yield
    finally:
        json_codec.JsonDecoder._decode_one = original


@contextlib.contextmanager
def without_typed_pieces():
    original = csv_codec._parse

    def text_only(data, names, columns, block_size, typed):
        if typed:
            raise pa.ArrowInvalid("typed reading switched off")
        return original(data, names, columns, block_size, typed)
    csv_codec._parse = text_only
    try:
        yield
    finally:
        csv_codec._parse = original


# ------------------------------------------------------------------ the paths

def single_record_path(calls: int):
    predict = scoring_path(MODEL_DIR)
    bodies = [json.dumps(r).encode() for r in synthetic.to_records(synthetic.generate(64, seed=SEED))]
    for body in bodies:                             # warm: the first calls build lookup tables
        predict(body)

    def run():
        for i in range(calls):
            predict(bodies[i % len(bodies)])
    return run


def file_path(rows: int, scratch: Path):
    model = load_model(MODEL_DIR)
    source = scratch / "rows.csv"
    synthetic.generate(rows, seed=SEED).drop(columns=["y"]).to_csv(source, index=False)

    def run():
        score_file(source, scratch / "scores.csv", model)
    return run


def ab(name: str, path_name: str, run, plain, rounds: int) -> dict:
    """Interleaved rounds of the path with the trick (A) and without (B)."""
    shares, walls = [], []
    run()                                                   # warm both
    with plain():
        run()
    for round_ in range(rounds):
        order = ("with", "without") if round_ % 2 == 0 else ("without", "with")
        took = {}
        for side in order:
            if side == "with":
                took[side] = timed(run)
            else:
                with plain():
                    took[side] = timed(run)
        shares.append(1 - took["with"][1] / took["without"][1])
        walls.append(1 - took["with"][0] / took["without"][0])
        say(f"  {name} round {round_ + 1}/{rounds}: CPU {took['with'][1]:.3f} s with, "
            f"{took['without'][1]:.3f} s without")
    share, wall = median(shares), median(walls)
    return {"trick": name, "path": path_name, "share_cpu": share, "share_wall": wall,
            "status": "pays" if share >= MIN_SHARE else "BELOW 10%"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 3 if args.quick else 7
    say("== speed tricks: each against the plain code it replaces")
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        single = single_record_path(2_000 if args.quick else 10_000)
        results.append(ab("one-record reading", "single-record request", single, without_one_record_reading, rounds))
        batch = file_path(50_000 if args.quick else 200_000, Path(scratch))
        results.append(ab("typed CSV pieces", "score.py CSV -> CSV", batch, without_typed_pieces, rounds))
    print()
    print_table(["trick", "path", "saves (CPU)", "saves (wall)", "status"],
                [[r["trick"], r["path"], f"{r['share_cpu']:.0%}", f"{r['share_wall']:.0%}", r["status"]]
                 for r in results])
    save_results("tricks", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
