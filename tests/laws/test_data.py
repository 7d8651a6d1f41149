import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laws.data import DataError, DataWarning, Table, check_design, load_table
from laws.fit import check_identified, inert_params
from laws.forms import get_form

ROWS = [
    {"N": 1e8, "D": 2e9, "D_prime": 0, "loss": 3.1, "domain": "web"},
    {"N": 1e8, "D": 2e9, "D_prime": 1e8, "loss": 3.0, "domain": "code"},
    {"N": 4e8, "D": 4e9, "D_prime": "", "loss": 2.8, "domain": "web"},
]


def test_csv_jsonl_and_parquet_load_the_same_table(tmp_path, write_csv):
    csv_path = write_csv(ROWS)
    jsonl = tmp_path / "results.jsonl"
    jsonl.write_text(
        "\n".join(json.dumps({**r, "D_prime": r["D_prime"] or None}) for r in ROWS) + "\n"
    )
    parquet = tmp_path / "results.parquet"
    pq.write_table(pa.table({k: [r[k] or None for r in ROWS] for k in ROWS[0]}), parquet)
    tables = [load_table(p) for p in (csv_path, jsonl, parquet)]
    for t in tables:
        np.testing.assert_allclose(t.Dp, [0, 1e8, 0])  # empty D_prime means 0
        np.testing.assert_allclose(t.loss, [3.1, 3.0, 2.8])
        assert t.domains == ["code", "web"]


def test_missing_d_prime_column_means_plain_pretraining(write_csv):
    t = load_table(write_csv([{"N": 1e8, "D": 1e9, "loss": 3.0}]))
    assert t.Dp.tolist() == [0.0] and t.domain is None


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"N": 1e8, "D": 1e9, "loss": "nan"}, r"line 3, column 'loss': 'nan' is not a finite"),
        ({"N": 1e8, "D": 1e9, "loss": "-1.0"}, r"line 3, column 'loss': -1 must be > 0"),
        ({"N": 1e8, "D": 1e9, "loss": 0}, r"line 3, column 'loss': 0 must be > 0"),
        ({"N": "big", "D": 1e9, "loss": 3.0}, r"line 3, column 'N': 'big' is not a number"),
        ({"N": 1e8, "D": -5, "loss": 3.0}, r"line 3, column 'D': -5 must be >= 0"),
        ({"N": 1e8, "D": "", "loss": 3.0}, r"line 3, column 'D': empty value"),
    ],
)
def test_bad_values_name_file_line_and_column(write_csv, row, message):
    path = write_csv([{"N": 1e8, "D": 1e9, "loss": 3.0}, row])
    with pytest.raises(DataError, match=message) as info:
        load_table(path)
    assert str(path) in str(info.value)


def test_missing_columns_and_bad_json_are_clear_errors(tmp_path, write_csv):
    with pytest.raises(DataError, match=r"missing column\(s\) loss"):
        load_table(write_csv([{"N": 1e8, "D": 1e9}]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"N": 1e8, "D": 1e9, "loss": 3}\n{"N": \n')
    with pytest.raises(DataError, match=r"bad.jsonl, line 2: invalid JSON"):
        load_table(bad)
    with pytest.raises(DataError, match="unknown table format"):
        load_table(write_csv(ROWS, name="results.txt"))


@pytest.mark.parametrize(("column", "meant"), [("Dprime", "D_prime"), ("domian", "domain"),
                                              ("D'", "D_prime"), ("Loss", "loss")])  # fmt: skip
def test_a_misspelt_column_is_refused_not_ignored(write_csv, column, meant):
    rows = [{**{k: v for k, v in row.items() if k != meant}, column: row[meant]} for row in ROWS]
    with pytest.raises(DataError, match=rf"column {column!r} .* did you mean {meant!r}"):
        load_table(write_csv(rows))


def test_extra_columns_are_kept_out_of_the_fit(write_csv):
    t = load_table(write_csv([{**row, "arm": "split", "cluster": 0} for row in ROWS]))
    np.testing.assert_allclose(t.loss, [3.1, 3.0, 2.8])


def test_collinear_design_warns():
    N = np.array([1e8, 2e8, 4e8])
    table = Table.from_arrays(N, 20 * N, [3.0, 2.9, 2.8], Dp=[0, 1e7, 0])
    with pytest.warns(DataWarning, match="same tokens-per-parameter ratio D/N = 20"):
        assert len(check_design(table)) == 1


def test_specialisation_parameters_warn_only_for_a_form_that_has_them(recwarn):
    table = Table.from_arrays([1e8, 2e8, 4e8], [1e9, 8e9, 2e10], [3.0, 2.9, 2.8])
    assert check_design(table) == []  # no D' > 0 rows: nothing to say before the form
    assert check_identified(get_form("chinchilla_total"), table) == []
    assert not [w for w in recwarn if issubclass(w.category, DataWarning)]
    assert inert_params(get_form("liew_kato_n"), table) == ["a2", "a3"]
    with pytest.warns(DataWarning, match=r"effective_data's w, sigma, tau change no prediction "
                      r"on these rows \(no row has D_prime > 0\)"):  # fmt: skip
        check_identified(get_form("effective_data"), table)
    with_split = Table.from_arrays([1e8, 2e8], [1e9, 8e9], [3.0, 2.9], Dp=[0, 1e8])
    assert inert_params(get_form("effective_data"), with_split) == []


def test_duplicated_rows_warn_with_their_count():
    rows = dict(N=[1e8, 1e8, 1e8, 2e8, 2e8], D=[1e9, 1e9, 1e9, 4e9, 4e9],
                loss=[3.0, 3.0, 3.0, 2.8, 2.8], Dp=[0, 0, 0, 1e8, 1e8],
                run=["a", "a", "a", "b", "c"])  # fmt: skip
    with pytest.warns(DataWarning, match=r"2 row\(s\) repeat an earlier row"):
        assert len(check_design(Table.from_arrays(**rows))) == 1


def test_excel_csv_with_a_byte_order_mark_loads(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("N,D,loss\n1e8,1e9,3.0\n".encode("utf-8-sig"))
    assert load_table(path).N.tolist() == [1e8]


def test_semicolon_separated_csv_is_named(tmp_path):
    path = tmp_path / "semicolons.csv"
    path.write_text("N;D;loss\n1e8;1e9;3,0\n")
    with pytest.raises(DataError, match="looks semicolon-separated"):
        load_table(path)


def test_single_model_size_warns_and_good_design_is_silent(recwarn):
    with pytest.warns(DataWarning, match="one model size"):
        check_design(Table.from_arrays([1e8, 1e8], [1e9, 2e9], [3.0, 2.9], Dp=[0, 1e8]))
    recwarn.clear()
    good = Table.from_arrays([1e8, 2e8, 2e8], [1e9, 1e9, 4e9], [3.0, 2.9, 2.7], Dp=[0, 1e8, 0])
    assert check_design(good) == []
    assert not [w for w in recwarn if issubclass(w.category, DataWarning)]


def test_subset_keeps_labels():
    t = Table.from_arrays([1, 2, 3], [1, 1, 1], [3.0, 2.0, 1.0], domain=["a", "b", "a"])
    s = t.subset(np.array([2, 0]))
    assert s.domain.tolist() == ["a", "a"] and s.loss.tolist() == [1.0, 3.0]


def test_a_directory_loads_every_law_points_file_under_it(tmp_path):
    for split, rows in (("split_6", [(1e6, 100, 0, 3.0)]), ("split_12", [(1e6, 200, 50, 2.5)])):
        folder = tmp_path / "exp" / split / "eval"
        folder.mkdir(parents=True)
        lines = [json.dumps({"N": n, "D": d, "D_prime": dp, "loss": loss, "run": split})
                 for n, d, dp, loss in rows]  # fmt: skip
        (folder / "law_points.jsonl").write_text("\n".join(lines) + "\n")
    with (tmp_path / "exp" / "split_12" / "eval" / "law_points.jsonl").open("a") as more:
        more.write(json.dumps({"N": 1e6, "D": 200, "loss": 2.7, "run": "split_12"}) + "\n")
    table = load_table(tmp_path / "exp")
    assert sorted(table.D.tolist()) == [100, 200, 200]
    assert sorted(table.loss.tolist()) == [2.5, 2.7, 3.0]
    assert sorted(table.Dp.tolist()) == [0, 0, 50]
    with pytest.raises(DataError, match="bad.*line 1, column 'loss'"):
        bad = tmp_path / "bad" / "eval"
        bad.mkdir(parents=True)
        (bad / "law_points.jsonl").write_text('{"N": 1, "D": 1, "loss": -1}\n')
        load_table(tmp_path / "bad")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no law_points.jsonl under it"):
        load_table(tmp_path / "empty")
