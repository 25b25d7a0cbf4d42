"""``hwgen search`` (issue 17, item 3): per-layer operator choice, the Pareto front of accuracy
against LUTs and energy, every point a trained model that ``hwgen build`` accepts."""

import contextlib
import io
import json

import pytest

from hwgen import cli
from hwgen.nn.models import MIXED_KINDS
from hwgen.search import SearchError, dominates, pareto_front, parse_budget, search


def run_cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def point(acc, luts, pj):
    return {"integer_accuracy": acc, "luts": luts, "energy_pj": pj}


def test_the_front_keeps_exactly_the_undominated_points():
    a, b, c, d = point(0.9, 100, 10), point(0.8, 50, 10), point(0.8, 120, 20), point(0.9, 100, 5)
    assert dominates(d, a) and not dominates(a, d) and dominates(a, c) and not dominates(b, a)
    assert pareto_front([a, b, c, d]) == [b, d]
    assert pareto_front([a, a]) == [a, a]  # equal points dominate neither


def test_budget_parses_and_refuses_in_one_line():
    assert parse_budget("luts=5000,energy=2e5") == {"luts": 5000, "energy_pj": 2e5}
    assert parse_budget(None) == {}
    for bad in ("luts", "ffs=3", "luts=-1", "energy=nan", "luts=inf"):
        with pytest.raises(SearchError):
            parse_budget(bad)


@pytest.mark.parametrize("args, message", [
    (["--budget", "lut=5"], "expected luts=N or energy=PJ"),
    (["--population", "3"], "population must be an integer >= 5"),
    (["--device", "ice99"], "ice99"),
    (["--channels", "8,x"], "--channels"),
])
def test_search_mistakes_are_one_line(args, message, tmp_path):
    code, _, err = run_cli("search", "--out", tmp_path / "s", *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s" / "points").iterdir())


@pytest.fixture(scope="module")
def found(tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    doc = search(out, population=5, generations=1, epochs=1, channels=(4, 8), cost="estimate",
                 budget={"luts": 10**6}, progress=False)
    return out, doc


def test_search_starts_from_every_single_kind_network_and_evolves(found):
    out, doc = found
    names = [p["name"] for p in doc["points"]]
    assert len(names) == len(set(names)) == 8  # 5 single-kind networks, 2 kept + 3 children
    single = {p["kinds"][0] for p in doc["points"] if p["single_kind"]}
    assert single == set(MIXED_KINDS)
    assert any(not p["single_kind"] and p["generation"] == 1 for p in doc["points"])
    assert all(p["cycles_per_image"] <= doc["target_cycles"] for p in doc["points"])  # one pace
    on = [p for p in doc["points"] if p["on_front"]]
    assert on and [p["name"] for p in pareto_front(doc["points"])] == doc["front"]
    assert all(not dominates(q, p) for p in on for q in doc["points"])
    saved = json.loads((out / "search.json").read_text())
    assert saved["format"] == "hwgen-search" and saved["front"] == doc["front"]
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_budget_keeps_points_off_the_front(found, tmp_path):
    _, doc = found
    cheapest = min(p["luts"] for p in doc["points"])
    points = [dict(p, within_budget=p["luts"] <= cheapest) for p in doc["points"]]
    front = pareto_front([p for p in points if p["within_budget"]])
    assert front and all(p["luts"] == cheapest for p in front)


def test_every_front_point_builds_and_is_bit_exact(found, tmp_path):
    _, doc = found
    best = max((p for p in doc["points"] if p["on_front"]), key=lambda p: p["integer_accuracy"])
    code, _, err = run_cli("build", best["checkpoint"], "--out", tmp_path / "b")
    assert code == 0, err
    code, out, err = run_cli("sim", tmp_path / "b", "--images", "2")
    assert code == 0 and "PASS" in out, out + err


@pytest.mark.slow
def test_search_with_place_and_route(tmp_path):
    code, out, err = run_cli("search", "--out", tmp_path / "s", "--population", "5",
                             "--generations", "0", "--epochs", "1", "--channels", "4,8",
                             "--budget", "luts=5000", "--quiet")
    assert code == 0, err
    doc = json.loads((tmp_path / "s" / "search.json").read_text())
    assert doc["cost"] == "synth" and all(p["luts"] > 0 and p["fmax_mhz"] for p in doc["points"])
    assert "Pareto front" in out
