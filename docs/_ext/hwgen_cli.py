"""``.. hwgen-cli::``: the reference of every ``hwgen`` command, generated from its argparse parser.

The page cannot drift from the code: each subcommand of :func:`hwgen.cli.make_parser` becomes
a section with its one-line help, its usage line and its arguments (names, metavar, choices,
help text with defaults expanded), in the parser's own order.
"""

from __future__ import annotations

import argparse

from docutils import nodes
from sphinx.util.docutils import SphinxDirective


def _subcommands(parser: argparse.ArgumentParser):
    for action in parser._actions:  # argparse keeps no public list of subparsers
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name) or "", sub


def _arguments(sub: argparse.ArgumentParser):
    f = sub._get_formatter()  # argparse's own rendering of metavars and help texts
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if action.option_strings:
            names = ", ".join(action.option_strings)
            if action.nargs != 0:
                names += " " + f._format_args(action, f._get_default_metavar_for_optional(action))
        else:
            names = f._format_args(action, f._get_default_metavar_for_positional(action))
        text = [f._expand_help(action)] if action.help else []
        if action.choices and "{" not in names:
            text.append("Choices: " + ", ".join(map(str, action.choices)) + ".")
        if action.required and action.option_strings:
            text.append("Required.")
        yield names, " ".join(text)


class HwgenCli(SphinxDirective):
    has_content = False

    def run(self):
        from hwgen.cli import make_parser

        parser = make_parser()
        out = [nodes.paragraph(text=parser.description or "")]
        out.append(nodes.literal_block(text=parser.format_usage().strip()))
        for name, help_text, sub in _subcommands(parser):
            section = nodes.section(ids=[nodes.make_id(f"hwgen-{name}")], names=[f"hwgen {name}"])
            section += nodes.title(text=f"hwgen {name}")
            section += nodes.paragraph(text=help_text[:1].upper() + help_text[1:] + ".")
            section += nodes.literal_block(text=sub.format_usage().strip())
            items = nodes.definition_list()
            for names, text in _arguments(sub):
                item = nodes.definition_list_item()
                item += nodes.term("", "", nodes.literal(text=names))
                item += nodes.definition("", nodes.paragraph(text=text or "—"))
                items += item
            if len(items):
                section += items
            self.state.document.note_implicit_target(section)
            out.append(section)
        return out


def setup(app):
    app.add_directive("hwgen-cli", HwgenCli)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
