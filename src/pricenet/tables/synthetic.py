"""A seeded synthetic table with the phone-price schema (the default data, no file needed)."""

from __future__ import annotations

import numpy as np

from pricenet.errors import DataError
from pricenet.tables.schema import MOBILE_PRICE
from pricenet.tables.table import Table


def make_synthetic(n_rows: int = 2000, noise: float = 0.05, seed: int = 0) -> Table:
    """A deterministic :data:`MOBILE_PRICE` table with balanced ``price_range``.

    The price is driven by a latent score dominated by ``ram``, then ``battery_power``,
    ``px_height`` and ``px_width``, plus Gaussian ``noise``; the classes are its quartiles.
    The numbers are those of the generator this package replaced, draw for draw.
    """
    import pandas as pd

    if n_rows < 8:
        raise DataError(f"data.n_rows={n_rows}: the synthetic generator needs at least 8 rows")
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    for f in MOBILE_PRICE.features:
        assert f.low is not None and f.high is not None
        if f.kind in ("integer", "binary"):
            cols[f.name] = rng.integers(int(f.low), int(f.high) + 1, n_rows).astype(np.float64)
        else:
            steps = int(round((f.high - f.low) * 10))
            cols[f.name] = f.low + rng.integers(0, steps + 1, n_rows) / 10.0
    # Plausible dependencies seen in the real data.
    cols["three_g"] = np.maximum(cols["three_g"], cols["four_g"])
    cols["px_height"] = np.floor(rng.random(n_rows) * (cols["px_width"] - 1))
    cols["sc_w"] = np.floor(rng.random(n_rows) * cols["sc_h"])
    cols["fc"] = np.minimum(cols["fc"], cols["pc"])

    def z(name: str) -> np.ndarray:
        v = cols[name]
        return (v - v.mean()) / (v.std() + 1e-12)

    score = (
        1.0 * z("ram")
        + 0.25 * z("battery_power")
        + 0.15 * z("px_height")
        + 0.15 * z("px_width")
        + noise * rng.standard_normal(n_rows)
    )
    ranks = np.argsort(np.argsort(score, kind="stable"), kind="stable")
    labels = (ranks * MOBILE_PRICE.num_classes // n_rows).astype(np.int64)
    for f in MOBILE_PRICE.features:
        if f.kind == "numeric":  # one decimal, as written in a CSV (same float32 values)
            cols[f.name] = np.round(cols[f.name], 1)
    frame = pd.DataFrame({name: cols[name] for name in MOBILE_PRICE.feature_names})
    return Table(frame, labels, None, MOBILE_PRICE, f"synthetic(n_rows={n_rows}, seed={seed})")
