"""Every error a user can cause derives from :class:`hwgen.errors.HwgenError`, and the command
line turns that one class into one line and exit status 2."""

import importlib
import pkgutil

import pytest

import hwgen
from hwgen import cli
from hwgen.errors import HwgenError


def _error_classes():
    """Every exception class defined in a module of hwgen (the cocotb testbench aside)."""
    import hwgen.boards  # mapped from boards/ beside the package: walked on its own

    found = {}
    infos = [*pkgutil.walk_packages(hwgen.__path__, "hwgen."),
             *pkgutil.walk_packages(hwgen.boards.__path__, "hwgen.boards.")]
    for info in infos:
        if info.name.startswith("hwgen.sim."):
            continue  # imports cocotb, which only runs inside a simulator
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (isinstance(obj, type) and issubclass(obj, BaseException)
                    and obj.__module__ == info.name):
                found[f"{info.name}.{obj.__qualname__}"] = obj
    return found


def test_every_error_class_derives_from_the_base():
    classes = _error_classes()
    assert len(classes) >= 15  # the walk found them (it can fail)
    assert sorted(n for n, c in classes.items() if not issubclass(c, HwgenError)) == []


def test_the_base_keeps_the_builtin_classes():
    from hwgen import ir
    from hwgen.flow import BuildError

    assert issubclass(ir.ModelError, ValueError) and issubclass(BuildError, RuntimeError)


def test_cli_prints_one_line_for_any_user_error(monkeypatch, capsys):
    def fail(args):
        raise HwgenError("the first line\nnot this one")

    monkeypatch.setattr(cli, "cmd_doctor", fail)
    assert cli.main(["doctor"]) == cli.EXIT_USER_ERROR
    assert capsys.readouterr().err == "hwgen: error: the first line\n"


def test_cli_lets_a_bug_through(monkeypatch):
    def bug(args):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "cmd_doctor", bug)
    with pytest.raises(KeyError):
        cli.main(["doctor"])
