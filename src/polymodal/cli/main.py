"""The ``polymodal`` command. Each sub-command lives in its own module and is added here."""

from __future__ import annotations

import typer

from polymodal.cli import data as data_cli
from polymodal.cli import index as index_cli
from polymodal.cli import score as score_cli
from polymodal.cli.demo import demo
from polymodal.cli.eval import eval_command
from polymodal.cli.export import export
from polymodal.cli.fit import fit, predict
from polymodal.cli.generate import generate
from polymodal.cli.models import models
from polymodal.cli.report import report
from polymodal.cli.serve import serve
from polymodal.cli.tasks import ask, caption, classify
from polymodal.cli.train import train
from polymodal.version import __version__

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
app.add_typer(index_cli.app, name="index")
app.command("search")(index_cli.search)
app.command("classify")(classify)
app.command("caption")(caption)
app.command("ask")(ask)
app.command("generate")(generate)
app.command("serve")(serve)
app.command("export")(export)
app.command("report")(report)
app.add_typer(score_cli.app, name="score")
app.command("eval")(eval_command)
app.command("fit")(fit)
app.command("predict")(predict)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"polymodal {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """polymodal: compose, pretrain, fine-tune, evaluate and serve multimodal models."""
    from polymodal.plugins import PluginError, load_plugins

    try:
        load_plugins()  # what they register, recipes and commands can name
    except PluginError as e:
        from polymodal.cli.output import fail

        fail(str(e), code=2)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
