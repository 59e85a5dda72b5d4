"""Print the schema pricenet infers for a CSV or Parquet file, as YAML to review, edit and pin.

python -m pricenet.schema FILE label=COLUMN [id=COLUMN] [max_categories=50] > schema.yaml
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

from pricenet.config.cli import parse_options
from pricenet.errors import ConfigError, exit_on_user_error

USAGE = """\
usage: python -m pricenet.schema FILE label=COLUMN [id=COLUMN] [max_categories=50] > schema.yaml

Infers a schema from FILE (CSV, or Parquet when it ends in .parquet) and prints it as YAML:
  label           the column to predict (its distinct values become the classes)
  id              a column kept for predictions, not a feature (default: a unique id/*_id column)
  max_categories  text columns with at most this many distinct values become categorical
Review the result: add low/high ranges to have values checked, set ordered, pin it."""


@dataclass
class SchemaOptions:
    """The command's options (``key=value``)."""

    file: str = "???"
    label: str = "???"
    id: str | None = None
    max_categories: int = 50


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    from pricenet.tables.read import infer_schema

    args = list(sys.argv[1:] if argv is None else argv)
    positional = [a for a in args if "=" not in a and a not in ("-h", "--help")]
    if len(positional) > 1:
        raise ConfigError(f"one FILE expected, got {len(positional)}: {positional} (see --help)")
    options = [a for a in args if a not in positional] + [f"file={p}" for p in positional]
    if not any(a.startswith("file=") for a in options) and not {"-h", "--help"} & set(args):
        raise ConfigError("missing FILE: python -m pricenet.schema FILE label=COLUMN (see --help)")
    opts = parse_options(options, SchemaOptions, USAGE)
    if opts.max_categories < 1:
        raise ConfigError(f"max_categories={opts.max_categories}: must be at least 1")
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    schema = infer_schema(opts.file, opts.label, opts.id, max_categories=opts.max_categories)
    sys.stdout.write(schema.to_yaml())


if __name__ == "__main__":
    main()
