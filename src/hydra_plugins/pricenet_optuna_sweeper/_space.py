"""Hydra's sweep syntax as Optuna distributions, and a trial's values back as overrides.

``choice(a, b)`` is categorical; ``range(lo, hi[, step])`` is an integer (or float) grid;
``interval(lo, hi)`` is continuous; ``tag(log, interval(...))`` samples it on a log scale.
Any other override (``trainer.epochs=5``, ``+key=x``, ``~key``) is passed to every job unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import Trial


@dataclass
class SearchSpace:
    """The parameters Optuna samples, and the overrides every job gets as they are."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)

    def overrides(self, trial: Trial) -> list[str]:
        """Sample (or read back, for a retried trial) every parameter: the job's overrides."""
        sampled = [
            f"{name}={trial._suggest(name, dist)}" for name, dist in self.distributions.items()
        ]
        return [*sampled, *self.fixed]


def _encoded(override: Override) -> list[str | int | float | bool | None]:
    return list(override.sweep_iterator(transformer=Transformer.encode))


def distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override."""
    value = override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        return CategoricalDistribution(_encoded(override))
    if isinstance(value, RangeSweep):
        # Hydra's range excludes its stop; Optuna's bounds include theirs.
        items = _encoded(override)
        if all(isinstance(x, int) for x in items):
            step = int(value.step or 1)
            return IntDistribution(int(items[0]), int(items[-1]), step=step)
        return CategoricalDistribution(items)
    if isinstance(value, IntervalSweep):
        return FloatDistribution(float(value.start), float(value.end), log="log" in value.tags)
    raise ValueError(f"{override.input_line}: this sweep is not supported by the Optuna sweeper")


def parse(arguments: list[str]) -> SearchSpace:
    """Sweep overrides become distributions, others stay overrides; the last one of a key wins.

    So ``optim=adam`` on the command line pins what the search space would have sampled.
    """
    entries: dict[str, BaseDistribution | str] = {}
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        entries.pop(key, None)
        if override.is_sweep_override():
            entries[key] = distribution(override)
        else:
            assert override.input_line is not None
            entries[key] = override.input_line
    return SearchSpace(
        distributions={k: v for k, v in entries.items() if isinstance(v, BaseDistribution)},
        fixed=[v for v in entries.values() if isinstance(v, str)],
    )
