"""Sphinx configuration of hwgen's reference documentation (``docs/``).

Build: ``.venv/bin/python -m sphinx -W -n -b html docs build/docs`` (``-W``: warnings are
errors; ``-n``: a reference to an hwgen object that does not exist is one).  The test
``tests/test_docs.py`` runs the same build in a temporary folder.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))

project = "hwgen"
author = "the hwgen authors"
copyright = "the hwgen authors, BSD-2-Clause"  # noqa: A001 - Sphinx's name

extensions = ["sphinx.ext.autodoc", "sphinx.ext.autosummary", "sphinx.ext.napoleon", "hwgen_cli"]

autosummary_generate = True
autosummary_imported_members = False
templates_path = ["_templates"]
# Every public name of a module, not only its ``__all__`` (exceptions, constants).
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True,
                           "undoc-members": True,
                           # What a class inherits from hwgen's own (private) bases; what it
                           # inherits from other libraries is skipped below.
                           "inherited-members": True}
# Undocumented module constants are listed (docstrings refer to them); a class's data
# attributes are not: its docstring's Members / Attributes section documents them.
# A method without a docstring stays without one: the ones of torch.autograd.Function refer to
# torch's own documentation.
autodoc_inherit_docstrings = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
# STYLE.md A.6: ports are documented in a "Members" section (as the Amaranth standard library).
# They become attributes, so that ``:attr:`o``` in a component's docstring finds its port.
napoleon_custom_sections = [("Members", "Attributes")]

html_theme = "alabaster"
html_static_path = []
exclude_patterns = ["_build"]

# Broken references to hwgen's own objects fail the build (-n); objects of other libraries
# are not resolved (no intersphinx: nothing is downloaded), so their names are not checked.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"hwgen\.(.*\.)?_\w+"),  # private bases (show-inheritance names them)
    (r"py:.*", r"(numpy|np|torch|nn|amaranth|cocotb|rich|ShapeLike|pathlib|os|typing|"
               r"collections|concurrent|argparse|dataclasses|enum|io|json|types|Path|PathLike|"
               r"ndarray|Tensor|Module|Signal|Value|ShapeCastable|Shape|wiring|stream|data|"
               r"Elaboratable|Component|Signature)(\..*)?"),
    # numpydoc type fields are free text ("path, dict or list of them", "(C, H, W)"): a word
    # in one is a class reference only when it names an hwgen class.
    (r"py:class", r"(?!hwgen\.).*"),
]


def _napoleon_but_not_attributes(app):
    """Napoleon reads a ``#:`` comment or a property docstring ``"Budget: one engine"`` as
    ``type: text``; hwgen writes plain sentences there, so napoleon leaves them alone."""
    from sphinx.ext.napoleon import _process_docstring

    listeners = app.events.listeners["autodoc-process-docstring"]
    for listener in list(listeners):
        if listener.handler is _process_docstring:
            listeners.remove(listener)

    def process(app, what, name, obj, options, lines):
        if what not in ("attribute", "data", "property"):
            _process_docstring(app, what, name, obj, options, lines)

    app.connect("autodoc-process-docstring", process)


def _skip_class_data(app, what, name, obj, skip, options):
    """A class's data attributes (documented by its docstring) and what it inherits from
    other libraries (torch, amaranth, the standard library) are not listed."""
    import inspect

    if what != "class":
        return None
    if not (inspect.isroutine(obj) or inspect.isclass(obj) or isinstance(obj, property)):
        return True
    target = obj.fget if isinstance(obj, property) else obj
    module = getattr(target, "__module__", None) or ""
    if not module.startswith("hwgen"):
        return True
    return None


def _canonical(target: str) -> str | None:
    """``module.qualname`` where the object named ``target`` is defined, if it is an hwgen
    object imported into another module (``hwgen.ir.Requant`` is ``hwgen.kinds.requant``'s)."""
    import importlib

    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for name in parts[i:]:
                obj = getattr(obj, name)
        except AttributeError:
            return None
        obj = obj.fget if isinstance(obj, property) else obj
        module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
        if module and qualname and module.startswith("hwgen") and f"{module}.{qualname}" != target:
            return f"{module}.{qualname}"
        return None
    return None


def _resolve_reexport(app, env, node, contnode):
    """A reference to a re-exported name resolves to the page of the object it names: modules
    document what they define, not what they import."""
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("hwgen."):
        return None
    canonical = _canonical(target)
    if canonical is None:
        return None
    return env.get_domain("py").resolve_xref(env, node["refdoc"], app.builder, node["reftype"],
                                             canonical, node, contnode)


def setup(app):
    app.connect("builder-inited", _napoleon_but_not_attributes)
    app.connect("autodoc-skip-member", _skip_class_data)
    app.connect("missing-reference", _resolve_reexport)
