import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from aslib.utils.io import atomic_write, load_results, save_results, save_table


def test_save_and_load_results_round_trip_plain_types(tmp_path):
    results = {"acc": np.float32(0.5), "perm": torch.tensor([2, 0, 1]), "nan": math.nan, "nested": {"a": (1, 2)}}
    path = save_results(tmp_path / "out", "nb", results)
    assert path == tmp_path / "out" / "nb.json"
    loaded = load_results(tmp_path / "out", "nb")
    assert loaded == {"acc": 0.5, "perm": [2, 0, 1], "nan": None, "nested": {"a": [1, 2]}}
    json.loads(path.read_text())  # strict JSON: no NaN literal


def test_missing_results_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nb.json"):
        load_results(tmp_path, "nb")


def test_failed_atomic_write_keeps_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("old complete content")

    def half_write(f):
        f.write(b"new partial")
        raise RuntimeError("killed half-way")

    with pytest.raises(RuntimeError):
        atomic_write(path, half_write)
    assert path.read_text() == "old complete content"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_save_table_writes_csv(tmp_path):
    table = pd.DataFrame({"method": ["l12", "relaxed"], "recovered": [1.0, 0.0]})
    path = save_table(tmp_path, "nb_recovery", table)
    pd.testing.assert_frame_equal(pd.read_csv(path), table)


@pytest.mark.parametrize("name", ["", "../escape", ".hidden"])
def test_invalid_results_names(tmp_path, name):
    with pytest.raises(ValueError, match="invalid results name"):
        save_results(tmp_path, name, {})
