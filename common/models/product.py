"""Products: what a plain (Synq) payload item may say, and the public read model."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, StringConstraints, field_validator, model_validator

from common.models.base import PublicModel, Timestamp, rfc3339

Title = Annotated[StrictStr, StringConstraints(min_length=1, max_length=500, pattern=r"\S")]
Sku = Annotated[StrictStr, StringConstraints(min_length=1, max_length=128)]
Gtin = Annotated[StrictStr, StringConstraints(min_length=1, max_length=64)]
Text = Annotated[StrictStr, StringConstraints(max_length=20_000)]
Name = Annotated[StrictStr, StringConstraints(max_length=500)]

MAX_VARIANTS = 50
MAX_ATTRIBUTE_DEPTH = 8
INT64 = 2**63


def check_storable(value: Any, depth: int = 0) -> None:
    """Refuse what Firestore cannot store: deep nesting, huge ints, empty or reserved keys."""
    if depth > MAX_ATTRIBUTE_DEPTH:
        raise ValueError(f"nested deeper than {MAX_ATTRIBUTE_DEPTH} levels")
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return
    if isinstance(value, int):
        if not -INT64 <= value < INT64:
            raise ValueError("integer out of the 64-bit range")
        return
    if isinstance(value, list):
        for item in value:
            if isinstance(item, list):
                raise ValueError("holds an array directly inside an array, which Firestore cannot store")
            check_storable(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not key or len(key) > 256 or (key.startswith("__") and key.endswith("__")):
                raise ValueError(f"attribute name {key[:40]!r} is empty, too long or reserved")
            check_storable(item, depth + 1)
        return
    raise ValueError(f"unsupported value of type {type(value).__name__}")


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    @field_validator("attributes", check_fields=False)
    @classmethod
    def _storable(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            check_storable(value)
        return value


class VariantIn(_Item):
    sku: Sku | None = None
    gtin: Gtin | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)


class ProductIn(_Item):
    """A BULK_IMPORT item: `title` required; a known `sku` updates that product."""

    title: Title
    sku: Sku | None = None
    description: Text | None = None
    category: Name | None = None
    brand: Name | None = None
    gtin: Gtin | None = None
    attributes: dict[str, Any] | None = None
    variants: list[VariantIn] | None = Field(default=None, max_length=MAX_VARIANTS)


class ProductPatch(_Item):
    """A BULK_UPDATE item: `id` or `sku` names the product; other given fields change, null clears."""

    id: StrictStr | None = None
    sku: Sku | None = None
    title: Title | None = None
    description: Text | None = None
    category: Name | None = None
    brand: Name | None = None
    gtin: Gtin | None = None
    attributes: dict[str, Any] | None = None
    variants: list[VariantIn] | None = Field(default=None, max_length=MAX_VARIANTS)


CORE_FIELDS = ("title", "sku", "description", "category", "brand", "gtin", "attributes", "variants")


class Variant(PublicModel):
    id: str
    sku: str | None = None
    gtin: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)


class ProductPublic(PublicModel):
    """A product as `GET /products/{id}` and the export file show it (stable field order)."""

    id: str
    org_id: str
    tenant_id: str
    title: str | None
    sku: str | None = None
    description: str | None = None
    category: str | None = None
    brand: str | None = None
    gtin: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    variants: list[Variant] = Field(default_factory=list)
    quality_score: int = 0
    issue_counts: dict[str, int] = Field(default_factory=lambda: {"ERROR": 0, "WARNING": 0})
    # From ProductImportData imports (empty for products that never had them):
    # values[attribute][recipient or "*"] = {"by_locale": {locale: value}, "explicit_null", "source_party"}
    values: dict[str, Any] = Field(default_factory=dict)
    # assets[attribute][recipient or "*"][locale] = {"asset_id", "name", "url", "source_url", "format", "source_party"}
    assets: dict[str, Any] = Field(default_factory=dict)
    taxonomy_nodes: list[str] = Field(default_factory=list)
    parents: list[dict[str, Any]] = Field(default_factory=list)
    package_type: str | None = None
    lifecycle: dict[str, Any] = Field(default_factory=dict)
    archived: bool = False
    recipients_to_link: list[str] = Field(default_factory=list)
    recipients_requirement_sets: Any = None
    catalog_items: list[dict[str, Any]] = Field(default_factory=list)
    workflow_id: str | None = None
    source_parties: list[Any] = Field(default_factory=list)
    # Only on products imported before MultiValues were applied into `values`: what was then sent, as is.
    multi_values: list[Any] = Field(default_factory=list)
    container_values: list[Any] = Field(default_factory=list)
    complex_values: list[Any] = Field(default_factory=list)
    nutritional_information_module: dict[str, Any] | None = None
    created_at: Timestamp
    updated_at: Timestamp

    @model_validator(mode="before")
    @classmethod
    def _system_created_date(cls, data: Any) -> Any:
        """LifeCycle.CreatedDate is the system's: the product's creation time."""
        if isinstance(data, dict) and data.get("created_at") is not None:
            lifecycle = dict(data.get("lifecycle") or {})
            lifecycle["created_date"] = rfc3339(data["created_at"])
            data = {**data, "lifecycle": lifecycle}
        return data
