"""Money as users read it. Unknown costs are never shown as free."""

from __future__ import annotations

from decimal import Decimal


def usd(amount: Decimal | None) -> str:
    """'$0', '$0.000123', '$1.2345', or 'cost unknown'."""
    if amount is None:
        return "cost unknown"
    if amount == 0:
        return "$0"
    if amount < Decimal("0.01"):
        return f"${amount:.6f}".rstrip("0")
    return f"${amount:.4f}"


def format_cost(cost: Decimal | None, *, unknown: int = 0, spent: int = 1) -> str:
    """A summed cost that admits unknown parts: '$0.0123', '≥ $0.0123, some costs unknown', or
    'cost unknown' (`unknown` runs had tokens but no price; `spent` tokens in all)."""
    if cost is None or (unknown and not cost and spent):
        return "cost unknown"
    if unknown:
        return f"≥ {usd(cost)}, some costs unknown"
    return usd(cost)
