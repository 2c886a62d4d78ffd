"""Data-quality rules: pure functions from a product (and which of its SKUs are duplicated) to findings.

A finding has a stable `key`: the engine keeps at most one open issue per product and key, so
re-evaluating an unchanged product opens nothing new, and a key that stops being found is resolved.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

WARNING, ERROR = "WARNING", "ERROR"
# The issue types these rules find (an item that fails opens one of engine.FAILURE_ISSUE_TYPES).
RULE_ISSUE_TYPES = ("MISSING_DESCRIPTION", "INVALID_BARCODE", "LOW_QUALITY_SCORE", "DUPLICATE_SKU")

# The completeness score, out of 100: what a shopper and a channel need, weighted by how much a
# missing value hurts. A description shorter than DESCRIPTION_FULL characters earns part of its share.
SCORE_WEIGHTS = {
    "title": 20,
    "description": 25,
    "category": 15,
    "brand": 15,
    "sku": 10,
    "gtin": 10,
    "attributes": 5,
}
DESCRIPTION_FULL = 40
DESCRIPTION_SHORT_POINTS = 10


@dataclass(frozen=True)
class Finding:
    key: str
    issue_type: str
    severity: str
    message: str


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def gtin_problem(value: str) -> str | None:
    """Why `value` is not a valid GTIN-8/12/13/14, or None when it is."""
    if not value.isascii() or not value.isdigit():
        return "must contain digits only"
    if len(value) not in (8, 12, 13, 14):
        return f"has {len(value)} digits; a GTIN has 8, 12, 13 or 14"
    check = int(value[-1])
    # GS1: weights 3,1,3,… from the rightmost data digit (value[-2]).
    total = 3 * sum(map(int, value[-2::-2])) + sum(map(int, value[-3::-2]))
    expected = (10 - total % 10) % 10
    if check != expected:
        return f"has check digit {check}; the GS1 check digit is {expected}"
    return None


def product_gtins(product: Mapping[str, Any]) -> list[str]:
    gtins = [product["gtin"]] if product.get("gtin") else []
    gtins += [v["gtin"] for v in product.get("variants") or [] if v.get("gtin")]
    return gtins


def product_skus(product: Mapping[str, Any]) -> dict[str, int]:
    """Every SKU the product holds, product-level and variant-level, with how often.

    A plain dict, not a `Counter`: this runs twice for every item a job applies, and building a
    `Counter` costs several times as much."""
    skus: dict[str, int] = {}
    if sku := product.get("sku"):
        skus[sku] = 1
    for variant in product.get("variants") or ():
        if sku := variant.get("sku"):
            skus[sku] = skus.get(sku, 0) + 1
    return skus


def quality_score(product: Mapping[str, Any]) -> int:
    """Completeness out of 100 (see SCORE_WEIGHTS)."""
    score = 0
    for field in ("title", "category", "brand", "sku"):
        if _text(product.get(field)):
            score += SCORE_WEIGHTS[field]
    description = _text(product.get("description"))
    if len(description) >= DESCRIPTION_FULL:
        score += SCORE_WEIGHTS["description"]
    elif description:
        score += DESCRIPTION_SHORT_POINTS
    gtin = product.get("gtin")
    if isinstance(gtin, str) and gtin and gtin_problem(gtin) is None:
        score += SCORE_WEIGHTS["gtin"]
    if product.get("attributes") or product.get("values"):
        score += SCORE_WEIGHTS["attributes"]
    return score


def duplicate_sku_finding(sku: str) -> Finding:
    return Finding(
        key=f"DUPLICATE_SKU:{sku}",
        issue_type="DUPLICATE_SKU",
        severity=ERROR,
        message=f"SKU '{sku}' is used by more than one variant in this tenant.",
    )


def evaluate(product: Mapping[str, Any], duplicate_skus: Iterable[str], threshold: int) -> list[Finding]:
    """Every rule over one product. `duplicate_skus`: its SKUs held more than once in the tenant."""
    findings: list[Finding] = []
    if not _text(product.get("description")):
        findings.append(
            Finding(
                "MISSING_DESCRIPTION",
                "MISSING_DESCRIPTION",
                WARNING,
                "Product has no description. Add one to improve SEO and customer experience.",
            )
        )
    bad = [(g, p) for g in product_gtins(product) if (p := gtin_problem(g))]
    if bad:
        detail = "; ".join(f"'{g}' {problem}" for g, problem in bad)
        findings.append(
            Finding(
                "INVALID_BARCODE",
                "INVALID_BARCODE",
                ERROR,
                f"Invalid GTIN: {detail}. Correct the barcode (GTIN-8/12/13/14 with a valid check digit).",
            )
        )
    score = quality_score(product)
    if score < threshold:
        missing = [f for f in ("description", "category", "brand", "sku", "gtin") if not _text(product.get(f))]
        hint = f" Fill in: {', '.join(missing)}." if missing else ""
        findings.append(
            Finding(
                "LOW_QUALITY_SCORE",
                "LOW_QUALITY_SCORE",
                WARNING,
                f"Data quality score is {score}/100, below the tenant's threshold of {threshold}.{hint}",
            )
        )
    findings.extend(duplicate_sku_finding(sku) for sku in sorted(set(duplicate_skus)))
    return findings
