"""How ``--help`` reads: prose as written, flags without a type, arguments in capitals (``INPUTS...``)."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup


def help_text(text: str | None) -> str | None:
    """Help as rich should print it: one line per paragraph (a line break inside a paragraph of the source is only
    where the source wrapped) and every ``[`` escaped, so rich markup keeps ``caso[vgg]`` and ``[default: ...]``."""
    if not text:
        return text
    paragraphs = []
    for paragraph in text.split("\n\n"):
        first, *rest = paragraph.splitlines() or [""]
        paragraphs.append(" ".join([first.rstrip(), *(line.strip() for line in rest)]))
    # typer dedents the paragraphs after the first as a docstring, whose first line sets no margin: an empty one
    # there keeps indented examples indented when "Examples:" would come first
    if len(paragraphs) > 1:
        paragraphs.insert(1, "")
    return "\n\n".join(paragraphs).replace("[", "\\[")


def _element_type(param: Any) -> str:
    """``<str>`` for a parameter typed ``list[str]``: what one value on the command line is."""
    bare = param.bare_type()
    return f"<{bare.removeprefix('list[').removesuffix(']').lower()}>"


class _PlainHelp:
    """Mixed into caso's command and group classes: tidies the help of the command and its parameters once."""

    help: str | None
    params: list[Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = help_text(self.help)
        for param in self.params:
            param.help = help_text(param.help)
            if param.metavar is not None:
                continue
            if param.param_type_name == "argument":  # as click writes it: DATA, INPUTS...
                param.metavar = param.name.upper() + ("..." if param.nargs != 1 else "")
                if param.nargs != 1:  # the type of one value, not Python's list[str]
                    param.display_type_rich = lambda ctx=None, p=param: _element_type(p)
            elif param.is_flag:  # a flag takes no value, so it shows no type
                param.metavar = ""
            elif param.multiple:  # a repeatable option takes one value each time: <str>, not <list[str]>
                param.metavar = _element_type(param)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            option.metavar = ""
        return option


class CasoCommand(_PlainHelp, TyperCommand):
    """A command whose usage line writes its arguments as click does: ``DATA``, ``[NAME]``, ``INPUTS...``."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                metavar = param.metavar
                assert metavar is not None  # _PlainHelp.__init__ gives every argument one
                pieces.append(metavar if param.required else f"[{metavar}]")
        return pieces


class CasoGroup(_PlainHelp, TyperGroup):
    """A command group with the same help."""


class CasoTyper(typer.Typer):
    """A ``typer.Typer`` whose group and commands are :class:`CasoGroup` and :class:`CasoCommand`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cls=CasoGroup, **kwargs)

    def command(self, name: str | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        return super().command(name, cls=CasoCommand, **kwargs)
