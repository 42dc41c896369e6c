"""The ``polymodal`` command. Each sub-command lives in its own module and is added here."""

from __future__ import annotations

import typer

from polymodal import __version__
from polymodal.cli import data as data_cli
from polymodal.cli.demo import demo
from polymodal.cli.models import models
from polymodal.cli.train import train

app = typer.Typer(
    name="polymodal",
    help="Compose, train, evaluate and serve multimodal models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data_cli.app, name="data")
app.command("models")(models)
app.command("train")(train)
app.command("demo")(demo)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"polymodal {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """polymodal: compose, pretrain, fine-tune, evaluate and serve multimodal models."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
