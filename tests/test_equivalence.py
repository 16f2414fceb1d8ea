"""The comparison rules and the three outcomes, as pure functions: no DVC, no MLflow, no model runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from govern import config, equivalence, machine
from govern.equivalence import Judgement, Rule
from govern.errors import ConfigError
from govern.events import upcast

HEADER = ["prediction", "probability"]


def table(*rows: tuple[str, str]) -> tuple[list[str], list[list[str]]]:
    return HEADER, [list(row) for row in rows]


def test_predictions_that_drift_in_the_last_bits_are_equivalent_with_the_largest_deviation() -> None:
    committed = table(("1", "0.9999774829"), ("0", "2.0739116e-07"), ("1", "0.5"))
    reproduced = table(("1", "0.9999774829000001"), ("0", "2.0739116e-07"), ("1", "0.5"))

    evidence = equivalence.compare_tables(committed, reproduced, Rule("predictions"))

    assert evidence["equivalent"] is True
    assert (evidence["rows"], evidence["rows_differing"], evidence["rows_beyond_tolerance"]) == (3, 1, 0)
    assert evidence["label_columns"] == ["prediction"], "integer columns are labels, compared exactly"
    assert 0 < evidence["max_abs_deviation"] < 1e-12
    assert evidence["largest_deviation"] == {
        "row": 1,
        "column": "probability",
        "committed": "0.9999774829",
        "reproduced": "0.9999774829000001",
    }
    assert evidence["summary"].startswith("1 of 3 rows differ in their last digits, all within tolerance")


def test_a_changed_class_diverges_even_when_every_probability_is_within_tolerance() -> None:
    committed = table(("1", "0.5000000001"), ("0", "0.1"))
    reproduced = table(("0", "0.5000000001"), ("0", "0.1"))

    evidence = equivalence.compare_tables(committed, reproduced, Rule("predictions", atol=1.0))

    assert evidence["equivalent"] is False
    assert (evidence["label_changes"], evidence["rows_beyond_tolerance"]) == (1, 1)
    assert "1 label change(s)" in evidence["summary"]


def test_a_probability_beyond_tolerance_diverges_and_says_by_how_much() -> None:
    committed = table(("1", "0.91"), ("1", "0.8"), ("0", "0.2"), ("0", "0.1"))
    reproduced = table(("1", "0.93"), ("1", "0.8"), ("0", "0.2"), ("0", "0.1"))

    evidence = equivalence.compare_tables(committed, reproduced, Rule("predictions", atol=1e-6, rtol=0.0))

    assert evidence["equivalent"] is False
    assert evidence["share_beyond_tolerance"] == 0.25
    assert evidence["max_abs_deviation"] == pytest.approx(0.02)
    assert (
        evidence["summary"]
        == "1 of 4 rows beyond tolerance; largest deviation 0.02 at row 1, probability: 0.91 -> 0.93"
    )


def test_relative_tolerance_scales_with_the_committed_value() -> None:
    committed = table(("1", "1000.0"))
    within = equivalence.compare_tables(committed, table(("1", "1000.0005")), Rule("table", atol=0.0, rtol=1e-6))
    beyond = equivalence.compare_tables(committed, table(("1", "1000.002")), Rule("table", atol=0.0, rtol=1e-6))
    assert within["equivalent"] is True and beyond["equivalent"] is False


@pytest.mark.parametrize(
    "reproduced, reason",
    [
        ((["prediction", "score"], [["1", "0.5"]]), "columns differ"),
        ((HEADER, [["1", "0.5"], ["0", "0.1"]]), "row count differs: 1 -> 2"),
        ((HEADER, [["1", "nan"]]), "1 of 1 rows beyond tolerance"),
        ((HEADER, [["1", "high"]]), "1 of 1 rows beyond tolerance"),
    ],
)
def test_tables_that_cannot_be_the_same_predictions_diverge(reproduced: tuple, reason: str) -> None:
    evidence = equivalence.compare_tables(table(("1", "0.5")), reproduced, Rule("predictions"))
    assert evidence["equivalent"] is False and evidence["summary"].startswith(reason)


def test_declared_label_columns_override_the_guess() -> None:
    committed = (["score"], [["0.25"], ["0.75"]])
    reproduced = (["score"], [["0.2500000000001"], ["0.75"]])
    assert equivalence.compare_tables(committed, reproduced, Rule("table"))["equivalent"] is True
    assert (
        equivalence.compare_tables(committed, reproduced, Rule("table", label_columns=("score",)))["equivalent"]
        is False
    )


def test_metric_deltas_name_each_moved_metric_and_whether_it_is_within_tolerance() -> None:
    deltas = equivalence.metric_deltas(
        {"f1": 0.9, "auc": 0.95, "acc": 0.8}, {"f1": 0.902, "auc": 0.95, "recall": 0.7}, {"f1": 0.005}
    )
    assert deltas["f1"]["within"] is True and deltas["f1"]["delta"] == pytest.approx(0.002)
    assert deltas["acc"] == {"expected": 0.8, "actual": None, "delta": None, "tolerance": 0.0, "within": False}
    assert deltas["recall"]["within"] is False and "auc" not in deltas


def test_downstream_metrics_judge_equivalent_only_with_something_to_compare() -> None:
    moved = {"f1": {"expected": 0.9, "actual": 0.9001, "delta": 0.0001, "tolerance": 0.001, "within": True}}
    within = equivalence.judge_metrics("m.pkl", "a", "b", moved, rule="predictions", compared=5, note="no file")
    assert within.equivalent and within.evidence["summary"] == "1 metric(s) moved, all within tolerance"
    assert within.evidence["note"] == "no file"
    nothing = equivalence.judge_metrics("m.pkl", "a", "b", {}, rule="predictions", compared=0)
    assert not nothing.equivalent and nothing.evidence["summary"] == "no downstream metric to judge by"


@pytest.mark.parametrize(
    "judgements, failed, expected",
    [
        ([], False, "exact"),
        ([Judgement("m", "a", "b", "predictions", True, {})], False, "equivalent"),
        (
            [Judgement("m", "a", "b", "predictions", True, {}), Judgement("d", "a", "b", "exact", False, {})],
            False,
            "diverged",
        ),
        ([], True, "diverged"),
    ],
)
def test_the_three_outcomes(judgements: list, failed: bool, expected: str) -> None:
    assert equivalence.outcome(judgements, failed=failed) == expected


def test_rules_default_by_kind_and_declared_paths_and_globs_win() -> None:
    rules = equivalence.Rules(outputs={"models/special.pkl": Rule("exact"), "data/features/*.csv": Rule("table")})
    assert rules.for_output("models/model.pkl", is_model=True, is_metrics=False).rule == "predictions"
    assert rules.for_output("models/special.pkl", is_model=True, is_metrics=False).rule == "exact"
    assert rules.for_output("data/features/x.csv", is_model=False, is_metrics=False).rule == "table"
    assert rules.for_output("data/raw/x.csv", is_model=False, is_metrics=False).rule == "exact"
    assert rules.for_output("metrics.json", is_model=False, is_metrics=True).rule == "metric-values"


def test_comparison_rules_are_read_from_configuration(tmp_path: Path) -> None:
    (tmp_path / "govern.toml").write_text(
        "[ci]\ntolerances = { f1 = 0.01 }\n"
        '[ci.models]\natol = 1e-6\nrtol = 0\ndata = ["data/holdout.csv"]\nlabel_columns = ["label"]\n'
        '[ci.outputs]\n"data/*.csv" = "table"\n"models/strict.pkl" = { rule = "exact" }\n'
    )
    rules = config.load(tmp_path, {}).comparison
    assert rules.tolerances == {"f1": 0.01}
    assert rules.models == Rule("predictions", 1e-6, 0.0, ("data/holdout.csv",), ("label",))
    assert rules.outputs["data/*.csv"] == Rule("table", 1e-6, 0.0), "outputs inherit the models' numeric tolerance"
    assert rules.outputs["models/strict.pkl"].rule == "exact"


@pytest.mark.parametrize(
    "text, message",
    [
        ('[ci.outputs]\n"x" = "close-enough"\n', "rule must be one of exact, predictions, downstream-metrics, table"),
        ("[ci.models]\natol = -1\n", "`ci.models.atol` must be a non-negative finite number, got -1"),
        ("[ci.models]\ntolerance = 1\n", "`ci.models` has unknown key(s) tolerance"),
        ('[ci.models]\ndata = "test.csv"\n', "`ci.models.data` must be a list of names"),
        ("[ci]\nmodels = 3\n", "`ci.models` must be a table"),
        ('[ci.outputs]\n"x" = 3\n', "must be a rule name or a table"),
    ],
)
def test_a_wrong_comparison_rule_is_named_with_its_fix(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "govern.toml").write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config.load(tmp_path, {})


def test_machine_differences_name_the_kernel_and_the_setting_that_chose_it() -> None:
    training = {
        "python": "3.11.7",
        "cpu": {"model": "Laptop", "flags": ["avx", "avx2", "fma"]},
        "threads": {"cpu_count": 8, "env": {}},
        "numeric_libraries": [{"filename": "libopenblas.so", "architecture": "Haswell", "num_threads": 8}],
        "host": "laptop",
    }
    verification = {
        "python": "3.11.7",
        "cpu": {"model": "Runner", "flags": ["avx", "avx2", "fma"]},
        "threads": {"cpu_count": 8, "env": {"OPENBLAS_CORETYPE": "Prescott"}},
        "numeric_libraries": [{"filename": "libopenblas.so", "architecture": "Prescott", "num_threads": 8}],
        "host": "runner",
    }
    found = machine.differences(training, verification)
    assert found["compared"] is True and found["not_recorded_at_training"] == []
    assert {(d["fact"], d["training"], d["verification"]) for d in found["differences"]} == {
        ("cpu.model", "Laptop", "Runner"),
        ("threads.env.OPENBLAS_CORETYPE", None, "Prescott"),
        ("numeric_libraries.libopenblas.so.architecture", "Haswell", "Prescott"),
    }, "the host name is not a difference worth reporting"


def test_machine_facts_an_older_training_did_not_record_are_not_differences() -> None:
    found = machine.differences({"python": "3.11.7"}, {"python": "3.12.1", "cpu": {"model": "X"}, "threads": {}})
    assert found["differences"] == [{"fact": "python", "training": "3.11.7", "verification": "3.12.1"}]
    assert found["not_recorded_at_training"] == ["cpu"]
    assert machine.differences(None, {"python": "3"}) == {
        "compared": False,
        "differences": [],
        "not_recorded_at_training": [],
    }


def test_cpu_facts_keep_only_the_float_relevant_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU @ 2GHz\n"
        "flags\t\t: fpu vme sse2 pni avx avx2 fma avx512f hypervisor\n\nprocessor\t: 1\nmodel name\t: other\n"
    )
    facts = machine.cpu(cpuinfo)
    assert (facts["model"], facts["vendor"]) == ("Test CPU @ 2GHz", "GenuineIntel")
    assert facts["flags"] == ["avx", "avx2", "avx512f", "fma", "pni", "sse2"]


def test_a_verdict_recorded_before_the_three_outcomes_reads_as_the_current_schema() -> None:
    verified = upcast(
        "reproduction.verified", 1, {"commit": "c", "outputs": [], "metrics": {}, "duration_s": 1, "ci": {}}
    )
    assert verified["match"] == "exact" and verified["differing_outputs"] == [] and verified["strict"] is False
    diverged = upcast(
        "reproduction.diverged",
        1,
        {
            "commit": "c",
            "differing_outputs": [{"path": "out.txt", "expected_md5": "a", "actual_md5": "b"}],
            "metric_deltas": {"acc": {"expected": 0.9, "actual": 0.8, "delta": -0.1, "tolerance": 0.0}},
            "duration_s": 1,
            "ci": {},
        },
    )
    assert diverged["match"] == "diverged"
    assert diverged["differing_outputs"] == [
        {
            "rule": "exact",
            "equivalent": False,
            "evidence": {"summary": "bytes differ"},
            "path": "out.txt",
            "expected_md5": "a",
            "actual_md5": "b",
        }
    ]
    assert diverged["metric_deltas"]["acc"]["within"] is False


def test_a_stale_lock_is_named_by_the_inputs_it_records_otherwise() -> None:
    committed = {
        "prepare": {"cmd": "python prep.py", "deps": [{"path": "prep.py", "md5": "a"}], "params": {}},
        "train": {
            "cmd": "python train.py",
            "deps": [{"path": "train.py", "md5": "b"}, {"path": "data/train.csv", "md5": "c"}],
            "params": {"params.yaml": {"train.C": 1.0}, "other.yaml": {"seed": 1}},
        },
    }
    reproduced = {
        "prepare": {"cmd": "python prep.py --fast", "deps": [{"path": "prep.py", "md5": "a"}], "params": {}},
        "train": {
            "cmd": "python train.py",
            "deps": [{"path": "train.py", "md5": "B"}, {"path": "data/train.csv", "md5": "float noise"}],
            "params": {"params.yaml": {"train.C": 0.5}, "other.yaml": {"seed": 1}},
        },
        "evaluate": {"cmd": "python eval.py", "deps": [], "params": {}},
    }

    stale = equivalence.stale_inputs(committed, reproduced, produced={"data/train.csv"})

    assert [(s["stage"], s["kind"], s["name"]) for s in stale] == [
        ("evaluate", "stage", "evaluate"),
        ("prepare", "command", "prepare"),
        ("train", "param", "train.C"),
        ("train", "dependency", "train.py"),
    ], "a produced dependency is judged by its producer's output rule, not as a stale input"
    assert equivalence.stale_text(stale) == "evaluate, prepare, train.C: 1.0 -> 0.5 and 1 more"
