import pytest


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run the slow tier (training from scratch, long simulations)")
    parser.addoption("--notebooks", action="store_true", default=False,
                     help="also run the notebooks tier: every notebooks/*.ipynb top to bottom")
    parser.addoption("--deep", type=int, default=0, metavar="N",
                     help="run the deep property tier on N random models (tests/test_property.py); "
                          "records benchmarks/property.json")


def pytest_collection_modifyitems(config, items):
    tiers = [("slow", "--runslow", "slow tier: run with --runslow"),
             ("notebooks", "--notebooks", "notebooks tier: run with --notebooks")]
    for marker, flag, reason in tiers:
        if config.getoption(flag):
            continue
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)
