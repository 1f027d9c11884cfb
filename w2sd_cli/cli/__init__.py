"""The ``w2sd`` command line: a thin Typer layer over the library; all rich/typer code lives here.

The app is built by a cached factory (never at import time), so tests can build fresh ones.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from w2sd_cli import __version__
from w2sd_cli.errors import W2SDError


class W2SDGroup(TyperGroup):
    """Maps every error to one paragraph and an exit code, in one place.

    ``W2SDError`` subclasses carry their text and ``exit_code``; ordinary failures that arrive untranslated
    (``OSError`` by errno, HTTP protocol errors, invalid URLs) go through ``errors.from_exception``; only what
    is left is called a bug.
    """

    def invoke(self, ctx: Any) -> Any:  # a typer.Context; the base class names the vendored click one (private)
        from w2sd_cli.cli.output import render_error

        try:
            return super().invoke(ctx)
        except W2SDError as err:
            if os.environ.get("W2SD_DEBUG"):
                raise
            render_error(str(err))
            ctx.exit(err.exit_code)
        except KeyboardInterrupt:
            render_error("Interrupted: no partial output file was kept (a download keeps its partial file and "
                         "resumes). Run the same command again to carry on.")
            ctx.exit(130)
        except (typer.Exit, typer.Abort, typer.TyperException):  # usage errors are TyperExceptions
            raise
        except Exception as err:
            if os.environ.get("W2SD_DEBUG"):
                raise
            from w2sd_cli.errors import from_exception

            mapped = from_exception(err)  # a disk, a permission, a network or an HTTP answer: not a bug
            if mapped is not None:
                render_error(str(mapped))
                ctx.exit(mapped.exit_code)
            from w2sd_cli.oserrors import mask

            render_error(mask(f"Unexpected error: {type(err).__name__}: {err}. This is a bug in w2sd or a plugin; "
                              "rerun with W2SD_DEBUG=1 for the traceback and report it."))
            ctx.exit(1)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"w2sd {__version__}")
        raise typer.Exit()


@functools.cache
def build_app() -> typer.Typer:
    """The Typer app with the built-in nouns and every plugin's ``register_commands``."""
    from w2sd_cli.cli import gen, pairs, plugins

    app = typer.Typer(
        name="w2sd", cls=W2SDGroup, no_args_is_help=True, add_completion=True,
        pretty_exceptions_enable=False, rich_markup_mode=None,
        help="Weak-to-strong diffusion with reflection: improve a strong diffusion model with a weak one.",
    )

    @app.callback()
    def root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")) -> None:
        """Weak-to-strong diffusion with reflection (W2SD): improve a strong model with a weak one."""

    gen.register(app)
    pairs.register(app)
    plugins.register(app)
    _register_optional(app, "w2sd_cli.cli.cache")
    _register_optional(app, "w2sd_cli.cli.bench")

    from w2sd_cli.plugins import get_host

    get_host().call("register_commands", app=app)
    return app


def _register_optional(app: typer.Typer, module: str) -> None:
    """Nouns whose modules may be absent from a trimmed install."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name != module:
            raise
        return
    mod.register(app)


def main() -> None:
    """Console-script entry point."""
    app = build_app()
    sys.exit(app(prog_name="w2sd", standalone_mode=True))
