"""The tutorial's figures: drawn from pricenet's own configs, saved as PNG."""

from __future__ import annotations

import pytest
from helpers import assert_png

from pricenet.explain import ExplainOptions, explain, lr_curve, main


def test_every_figure_is_a_valid_png(tmp_path):
    written = explain(
        ["activations", "schedulers", "ema"], ExplainOptions(out_dir=str(tmp_path), epochs=40)
    )
    assert [p.name for p in written] == ["activations.png", "schedulers.png", "ema.png"]
    for path in written:
        assert_png(path, min_size=(800, 500))


@pytest.mark.parametrize(
    ("scheduler", "expected"),
    [
        ("step", [1e-3] * 30 + [5e-4] * 30 + [2.5e-4] * 10),
        ("multistep", [1e-3] * 50 + [3e-4] * 20),
        ("none", [1e-3] * 70),
        # the made-up val accuracy is flat from epoch 17 on: patience 10, then halve
        ("plateau", [1e-3] * 28 + [5e-4] * 11 + [2.5e-4] * 11 + [1.25e-4] * 11 + [6.25e-5] * 9),
    ],
)
def test_lr_curves_follow_the_scheduler_configs(compose_cfg, scheduler, expected):
    cfg = compose_cfg(f"scheduler={scheduler}", "trainer.epochs=70", "optim.lr=0.001")
    assert lr_curve(cfg, 70) == pytest.approx(expected)


def test_command_draws_only_the_named_figure(tmp_path, capsys):
    main(["ema", f"out_dir={tmp_path}"])
    assert [p.name for p in tmp_path.iterdir()] == ["ema.png"]
    assert f"wrote {tmp_path / 'ema.png'}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [(["losses"], "unknown figure 'losses'"), (["epochs=0"], "epochs=0 is invalid")],
)
def test_bad_arguments_exit_2(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main([*args, f"out_dir={tmp_path}"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
