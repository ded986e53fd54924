"""What tokens cost: a price set in admin (`ModelPrice`) wins over `settings.AGENTS_PRICING`
(which `AGENTS_PRICING_JSON` extends)."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from django.conf import settings

from usage.models import ModelPrice

_MILLION = Decimal(1_000_000)
_PRECISION = Decimal("0.00000001")


def price_of(model: str) -> dict[str, Any] | None:
    """USD per million tokens (`input`, `cached_input`, `output`) for `model`, or None.

    Both sources are tried for the full label, then for the name after the last "/" (e.g.
    "openrouter/gpt-4.1-mini"); models that run on this machine ("local/…") cost nothing."""
    for name in dict.fromkeys([model, model.rsplit("/", 1)[-1]]):
        prices = _admin_price(name) or settings.AGENTS_PRICING.get(name)
        if prices is not None:
            return prices
    if model.startswith("local/"):
        return settings.AGENTS_PRICING["local"]
    return None


def cost_of(*, model: str, usage: dict[str, int]) -> Decimal | None:
    """USD for this usage, or None when the model has no price (unknown is not free)."""
    prices = price_of(model)
    if prices is None:
        return None
    cached = usage.get("cached_tokens", 0)
    uncached = max(usage.get("input_tokens", 0) - cached, 0)
    total = (
        Decimal(uncached) * Decimal(prices["input"])
        + Decimal(cached) * Decimal(prices.get("cached_input", prices["input"]))
        + Decimal(usage.get("output_tokens", 0)) * Decimal(prices["output"])
    )
    return (total / _MILLION).quantize(_PRECISION)


# Prices set in admin, read at most every PRICE_CACHE_SECONDS per process (not once per run).
PRICE_CACHE_SECONDS = 30.0
_admin_prices: dict[str, tuple[float, dict[str, Any] | None]] = {}


def _admin_price(model: str) -> dict[str, Any] | None:
    if not model:
        return None
    cached = _admin_prices.get(model)
    if cached is not None and time.monotonic() - cached[0] < PRICE_CACHE_SECONDS:
        return cached[1]
    price = _read_admin_price(model)
    _admin_prices[model] = (time.monotonic(), price)
    return price


def forget_prices() -> None:
    """A price changed in admin: this process uses it from the next run on."""
    _admin_prices.clear()


def _read_admin_price(model: str) -> dict[str, Any] | None:
    row = ModelPrice.objects.filter(model=model).first()
    if row is None:
        return None
    cached = row.cached_input_per_million
    return {
        "input": row.input_per_million,
        "cached_input": row.input_per_million if cached is None else cached,
        "output": row.output_per_million,
    }
