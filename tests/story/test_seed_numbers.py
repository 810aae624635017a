"""The learner's hand-worked numbers, read from gradmem's own report (tensors.csv)."""
from conftest import read_tensors, value_of


def test_one_weight(seed_reports):
    t = read_tensors(seed_reports["seed_one_weight"])
    assert value_of(t, "w.grad") == "600"
    assert [value_of(t, n) for n in ("loss.grad", "error.grad", "output.grad")] == ["1", "-60", "60"]
    assert value_of(t, "loss") == "900" and value_of(t, "error") == "-30"


def test_two_weights(seed_reports):
    t = read_tensors(seed_reports["seed_two_weights"])
    assert value_of(t, "w.grad") == "[2400, 3600]"
    assert [value_of(t, n) for n in ("loss.grad", "error.grad", "output.grad")] == ["1", "-240", "240"]
    assert value_of(t, "output") == "140" and value_of(t, "loss") == "14400"


def test_two_rows(seed_reports):
    t = read_tensors(seed_reports["seed_two_rows"])
    assert value_of(t, "w.grad") == "[12150, 16400]"
    assert value_of(t, "error_squared.grad") == "[0.5, 0.5]"
    assert value_of(t, "error.grad") == "[-120, -365]"
    assert value_of(t, "output.grad") == "[120, 365]"
    assert value_of(t, "loss") == "73812.5"
    assert value_of(t, "error_squared") == "[14400, 133225]"
