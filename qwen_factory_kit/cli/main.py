"""Entry point of the ``qfk`` command."""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..errors import QfkError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="qfk")
def cli() -> None:
    """qfk: correct, fast and repeatable Qwen3 fine-tuning with LLaMA-Factory.

    \b
    Start here:
      qfk demo                                   # the whole path on bundled examples, offline
      qfk convert medical-r1 data.jsonl          # convert, with canonical <think> tags
      qfk recipe new --model Qwen3-4B --method lora --dataset medical_r1 -o sft.yaml
      qfk train sft.yaml                         # or: llamafactory-cli train sft.yaml
      qfk doctor                                 # check the installation
    """


def _register() -> None:
    from .bundle import pack, unpack
    from .convert import convert_group
    from .datasets import datasets_group
    from .demo import demo
    from .doctor import doctor
    from .eval import eval_cmd
    from .lint import lint
    from .recipe import recipe_group
    from .serve import chat, merge, serve, translate
    from .stats import render, stats
    from .train import train
    from .webui import webui

    cli.add_command(convert_group)
    cli.add_command(datasets_group)
    cli.add_command(doctor)
    cli.add_command(demo)
    cli.add_command(lint)
    cli.add_command(stats)
    cli.add_command(render)
    recipe_group.add_command(pack)
    recipe_group.add_command(unpack)
    cli.add_command(recipe_group)
    cli.add_command(train)
    cli.add_command(eval_cmd)
    cli.add_command(merge)
    cli.add_command(chat)
    cli.add_command(translate)
    cli.add_command(serve)
    cli.add_command(webui)


_register()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user mistakes print a message and a hint (exit 2), never a traceback."""
    try:
        rv = cli.main(args=argv, prog_name="qfk", standalone_mode=False)
    except QfkError as exc:
        click.secho(f"error: {exc.message}", fg="red", err=True)
        if exc.hint:
            click.echo(f"  hint: {exc.hint}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("interrupted: nothing was changed (earlier outputs are left as they were)", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("interrupted: nothing was changed (earlier outputs are left as they were)", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except BrokenPipeError:  # pragma: no cover - `qfk ... | head`
        return 0
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
