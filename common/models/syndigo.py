"""The ProductImportData payload (the established PIM vendor's import format), field for field.

Names keep the vendor's PascalCase so a migrating caller's feed validates unchanged. Each product
is validated on its own, so one bad product is an item failure, not a rejected request.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, StringConstraints, field_validator, model_validator

from common.models.base import PublicModel
from common.models.product import check_storable

Short = Annotated[StrictStr, StringConstraints(max_length=500)]


class ImportModeValue(StrEnum):
    CreateOrUpdate = "CreateOrUpdate"
    Create = "Create"
    Update = "Update"
    ExportOnly = "ExportOnly"


class ErrorModeValue(StrEnum):
    Fail = "Fail"
    Ignore = "Ignore"


PACKAGE_TYPES = ("Load", "MixedModule", "Pallet", "Display", "Pack", "Case", "BaseUnit")
ASSET_FORMATS = ("jpeg", "png", "jpg", "gif", "mp4", "mov", "pdf")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AttributeValue(_Strict):
    """One entry of `Values` or `MultiValues`: an attribute's value per locale, general or for one
    recipient. The vendor's reference shows no MultiValues entry, only that it "holds all attributes of
    type MultiValue"; its other attribute arrays (Values, AssetValues) share this Name / ValuesByLocale /
    SourceParty / Recipient / Delete / IsExplicitNullValue shape, so MultiValues takes it too, with a
    list in each locale."""

    Name: Short = Field(min_length=1)
    ValuesByLocale: dict[str, Any] = Field(default_factory=dict)
    SourceParty: StrictStr | None = ""
    Recipient: StrictStr | None = ""
    Delete: StrictBool = False
    IsExplicitNullValue: StrictBool = False

    @field_validator("ValuesByLocale")
    @classmethod
    def _storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_storable(value)
        return value


class AssetLocaleValue(_Strict):
    Name: StrictStr | None = None
    Url: Annotated[StrictStr, StringConstraints(min_length=1, max_length=4096)] | None = None
    URL: Annotated[StrictStr, StringConstraints(min_length=1, max_length=4096)] | None = None
    SourceUrl: Annotated[StrictStr, StringConstraints(min_length=1, max_length=4096)] | None = None
    Format: StrictStr | None = None
    SourceParty: StrictStr | None = ""
    Recipient: StrictStr | None = ""

    @field_validator("Format")
    @classmethod
    def _format(cls, value: str | None) -> str | None:
        if value is not None and value.lower() not in ASSET_FORMATS:
            raise ValueError(f"must be one of {', '.join(ASSET_FORMATS)}")
        return value.lower() if value else value


class AssetValue(_Strict):
    Name: Short = Field(min_length=1)
    ValuesByLocale: dict[str, AssetLocaleValue]  # required for AssetValues; {} with Delete removes them all
    SourceParty: StrictStr | None = ""
    Recipient: StrictStr | None = ""
    Delete: StrictBool
    IsExplicitNullValue: StrictBool


class ParentDetails(_Strict):
    ProductIdentifier: Annotated[StrictStr, StringConstraints(min_length=1, max_length=128)]
    Quantity: StrictInt = Field(gt=0)


class LifeCycleDate(_Strict):
    Value: StrictStr | None = None
    Delete: StrictBool = False


class LifeCycleIn(_Strict):
    CreatedDate: LifeCycleDate | None = None
    DiscontinueDate: LifeCycleDate | None = None
    DeleteDate: LifeCycleDate | None = None


class CatalogItem(_Strict):
    Party: Annotated[StrictStr, StringConstraints(min_length=1, max_length=128)]
    TargetMarket: Annotated[StrictStr, StringConstraints(pattern=r"^[0-9]{3}$")]


class ProductToImport(_Strict):
    ImportMode: ImportModeValue
    ProductIdentifierPropertyOverride: StrictStr | None = None
    ProductReferencePropertyOverride: StrictStr | None = None
    ProductIdentifierValue: Annotated[StrictStr, StringConstraints(min_length=1, max_length=256)]
    SourceParties: list[StrictStr] = Field(default_factory=list)
    TaxonomyNodes: list[Annotated[StrictStr, StringConstraints(min_length=1, max_length=128)]] = Field(default_factory=list)
    CatalogItems: list[CatalogItem] = Field(default_factory=list)
    PackageType: Literal["Load", "MixedModule", "Pallet", "Display", "Pack", "Case", "BaseUnit"] | None = None
    ImmediateParentDetails: ParentDetails | list[ParentDetails] | dict[str, Any] | None = None
    RecipientsToLink: list[StrictStr] = Field(default_factory=list)
    WorkflowId: StrictStr | None = None
    RecipientsRequirementSets: dict[str, Any] | list[Any] | None = None
    Values: list[AttributeValue] = Field(default_factory=list)
    MultiValues: list[AttributeValue] = Field(default_factory=list)
    AssetValues: list[AssetValue] = Field(default_factory=list)
    ContainerValues: list[Any] = Field(default_factory=list)
    ComplexValues: list[Any] = Field(default_factory=list)
    NutritionalInformationModule: dict[str, Any] | None = None
    LifeCycle: LifeCycleIn | None = None
    Archived: StrictBool = False
    IsExplicitNullValue: StrictBool = False

    @field_validator("ContainerValues", "ComplexValues", "NutritionalInformationModule", "RecipientsRequirementSets")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        check_storable(value)
        return value

    def parents(self) -> list[ParentDetails]:
        details = self.ImmediateParentDetails
        if isinstance(details, ParentDetails):
            return [details]
        if isinstance(details, list):
            return details
        if details:  # a non-empty object that is not {ProductIdentifier, Quantity}
            return [ParentDetails.model_validate(details)]
        return []


class ProductImportDataIn(_Strict):
    """The envelope. `ProductsToImport` stays raw here: each product is validated as its own item."""

    ProductsToImport: list[Any] = Field(min_length=1)
    ProductIdentifierProperty: Annotated[StrictStr, StringConstraints(min_length=1, max_length=128)]
    ProductReferenceProperty: StrictStr | None = ""
    Archived: StrictBool = False


class ImportRequest(_Strict):
    ProductImportData: ProductImportDataIn
    ErrorMode: ErrorModeValue = ErrorModeValue.Fail
    # Allowed inside a bulk job's payload (there are no query parameters there).
    whatIf: StrictBool = False
    vocabularyId: StrictStr | None = None
    shouldIncludeMissingVocabularyAttributes: StrictBool | None = None


class ImportError_(PublicModel):
    Code: str
    Field: str | None = None
    Message: str


class ImportResult(PublicModel):
    Result: Literal["Success", "Failure"]
    IdentifierValue: str | None = None
    MatchedId: str | None = None
    Errors: list[dict[str, Any]] = Field(default_factory=list)
    # verbose=true only: what changed (attribute, recipient, locale, old → new) and the issues it opened or resolved.
    Changes: list[dict[str, Any]] | None = None
    ValidationIssues: list[str] | None = None


class ImportResponse(PublicModel):
    """The vendor's response body."""

    VerboseResponse: bool
    OverallResult: Literal["Success", "PartialSuccess", "Failure"]
    WhatIf: bool = False
    Errors: list[dict[str, Any]] = Field(default_factory=list)
    ResultsByActionType: dict[str, list[ImportResult]]


# -- vocabulary and taxonomy ------------------------------------------------------------------

CORE_TARGETS = ("title", "description", "brand", "category", "sku", "gtin")


class VocabularyAttribute(_Strict):
    name: Annotated[StrictStr, StringConstraints(min_length=1, max_length=200)]
    maps_to: Literal["title", "description", "brand", "category", "sku", "gtin"] | None = None
    type: Literal["text", "number", "boolean", "date", "asset"] = "text"
    multi_value: StrictBool = False
    locale_aware: StrictBool = True
    # An identifier attribute can name products in ProductIdentifierProperty (sku and gtin always can).
    identifier: StrictBool = False

    @model_validator(mode="after")
    def _mappable(self) -> VocabularyAttribute:
        # A core field holds one text: a list, or an asset (kept in `assets`, never in `values`),
        # would fill it with a list's repr or never fill it at all.
        if self.maps_to and self.multi_value:
            raise ValueError(f"a multi_value attribute cannot map to '{self.maps_to}', which holds one value")
        if self.maps_to and self.type == "asset":
            raise ValueError(f"an asset attribute cannot map to '{self.maps_to}'")
        return self


class VocabularyIn(_Strict):
    name: Annotated[StrictStr, StringConstraints(min_length=1, max_length=200)]
    default: StrictBool = False
    default_locale: Annotated[StrictStr, StringConstraints(min_length=2, max_length=35)] = "en-US"
    # The default of an import's shouldIncludeMissingVocabularyAttributes ("defaults to setting in
    # customer vocabulary, else defaults to false").
    include_missing_attributes: StrictBool = False
    attributes: list[VocabularyAttribute] = Field(default_factory=list, max_length=2000)

    @field_validator("attributes")
    @classmethod
    def _unique(cls, value: list[VocabularyAttribute]) -> list[VocabularyAttribute]:
        names = [a.name.casefold() for a in value]
        if len(names) != len(set(names)):
            raise ValueError("attribute names must be unique")
        targets = [a.maps_to for a in value if a.maps_to]
        for target in targets:
            if targets.count(target) > 1:
                # Which of two filled it would depend on which of them an item happened to change.
                raise ValueError(f"only one attribute may map to '{target}'")
        return value


class TaxonomyNodeIn(_Strict):
    name: Annotated[StrictStr, StringConstraints(min_length=1, max_length=200)]
    parent_id: StrictStr | None = None


class VocabularyPublic(PublicModel):
    id: str
    name: str
    default: bool
    default_locale: str
    include_missing_attributes: bool
    attributes: list[dict[str, Any]]
    created_at: str
    updated_at: str


class TaxonomyNodePublic(PublicModel):
    id: str
    name: str
    parent_id: str | None = None
    created_at: str


class RetryRequest(_Strict):
    """POST /bulk-jobs/{id}/retry: corrected items, by their index in the retried job's payload."""

    corrections: dict[str, Any] = Field(default_factory=dict)
