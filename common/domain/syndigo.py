"""Applying one product of a ProductImportData payload, with no I/O of its own.

The same `CatalogView` and `save_product` as plain items: the product change, its SKU and value
index entries, its validation issues and its audit event are recorded together and commit together
(or are dropped, for whatIf and for ErrorMode Fail).

Stored shape, beside the core fields (title, sku, description, brand, category, gtin):

    values:  {attribute: {scope: {"by_locale": {locale: value}, "explicit_null": bool, "source_party": str}}}
             scope is "*" for the general value, else the recipient ("Amazon US"); from Values and
             MultiValues alike (a multi_value attribute's locale holds a list)
    multi_values: only on products imported before MultiValues were applied: the entries as then
             sent, kept as they are (never written, read or changed by an import now)
    assets:  {attribute: {scope: {locale: {asset_id, name, url, source_url, format}}}}
    identifier_values: {attribute: value} for identifier attributes (indexed in value_index)
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from pydantic import ValidationError

from common.domain.engine import (
    AMBIGUOUS_IDENTIFIER,
    CREATED,
    IDENTIFIER_CONFLICT,
    IMPORT_REJECTED,
    PRODUCT_NOT_FOUND,
    UPDATED,
    CatalogView,
    ItemError,
    ItemFailure,
    _validation_errors,
    derived_id,
    holders_of,
    record_failure,
    result,
    save_product,
    value_key,
)
from common.http import is_safe_id
from common.models.syndigo import AssetValue, AttributeValue, ImportModeValue, ProductToImport

GENERAL = "*"
CORE_NAMES = {"sku": "sku", "gtin": "gtin", "id": "id", "productid": "id"}
_LOCALE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


@dataclass(frozen=True)
class Attribute:
    name: str
    id: str
    maps_to: str | None = None
    type: str = "text"
    multi_value: bool = False
    locale_aware: bool = True
    identifier: bool = False


@dataclass
class Vocabulary:
    """A tenant's attribute definitions, found by alias (case-insensitive) or by attribute id."""

    id: str
    default_locale: str
    attributes: dict[str, Attribute] = field(default_factory=dict)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Vocabulary:
        vocab = cls(id=doc["id"], default_locale=doc.get("default_locale") or "en-US")
        for raw in doc.get("attributes", []):
            multi_value, type_ = raw.get("multi_value", False), raw.get("type", "text")
            # A vocabulary stored before the API refused a list or an asset mapped to a core field
            # (which holds one text) keeps the attribute, unmapped.
            maps_to = None if multi_value or type_ == "asset" else raw.get("maps_to")
            attr = Attribute(
                name=raw["name"],
                id=raw.get("id") or derived_id(doc["id"], "attribute", raw["name"].casefold()),
                maps_to=maps_to,
                type=type_,
                multi_value=multi_value,
                locale_aware=raw.get("locale_aware", True),
                identifier=raw.get("identifier", False) or maps_to in ("sku", "gtin"),
            )
            vocab.attributes[attr.name.casefold()] = attr
            vocab.attributes[attr.id.casefold()] = attr
        return vocab

    def find(self, name: str) -> Attribute | None:
        return self.attributes.get(name.casefold())


@dataclass(frozen=True)
class ImportOptions:
    vocabulary: Vocabulary
    identifier_property: str
    include_missing: bool = False
    archived: bool = False
    verbose: bool = False


def identifier_of(raw: Any) -> str | None:
    value = raw.get("ProductIdentifierValue") if isinstance(raw, dict) else None
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class Identifier:
    """How a product is named: by its SKU, by its id, or by a value-indexed attribute."""

    kind: str  # "sku" | "id" | "value"
    attribute: str  # the value index attribute ("gtin", or a vocabulary attribute name)
    label: str


def resolve_identifier(options: ImportOptions, name: str) -> Identifier:
    attr = options.vocabulary.find(name)
    if attr is not None:
        if attr.maps_to == "sku":
            return Identifier("sku", "sku", name)
        if attr.maps_to == "gtin":
            return Identifier("value", "gtin", name)
        if attr.identifier:
            return Identifier("value", attr.name, name)
        raise ItemFailure(
            IMPORT_REJECTED,
            [
                ItemError(
                    "not_an_identifier",
                    f"Attribute '{name}' is not an identifier: mark it \"identifier\": true in the vocabulary.",
                    "ProductIdentifierProperty",
                )
            ],
        )
    core = CORE_NAMES.get(name.replace(" ", "").casefold())
    if core == "sku":
        return Identifier("sku", "sku", name)
    if core == "gtin":
        return Identifier("value", "gtin", name)
    if core == "id":
        return Identifier("id", "id", name)
    raise ItemFailure(
        IMPORT_REJECTED, [ItemError("unknown_attribute", f"Identifier property '{name}' is not in the vocabulary.", "ProductIdentifierProperty")]
    )


def syndigo_needs(items: Iterable[Any], options: ImportOptions) -> tuple[set[str], set[str], set[str]]:
    """Products, SKUs and identifiers a batch will read (its value index keys: `value_keys`)."""
    ids, skus, idents = set(), set(), set()
    for raw in items:
        value = identifier_of(raw)
        if not value:
            continue
        idents.add(value)
        try:
            ident = resolve_identifier(options, _override(raw) or options.identifier_property)
        except ItemFailure:
            continue
        if ident.kind == "sku":
            skus.add(value)
        elif ident.kind == "id" and is_safe_id(value):
            ids.add(value)
    return ids, skus, idents


def name_of(raw: Any, options: ImportOptions) -> tuple[str, str] | None:
    """How an entry names its product: the way ("sku", "id", or "value:" and the value index
    attribute) and the value. None when it names none, or by a property the vocabulary lacks."""
    value = identifier_of(raw)
    if not value:
        return None
    try:
        ident = resolve_identifier(options, _override(raw) or options.identifier_property)
    except ItemFailure:
        return None
    return (f"value:{ident.attribute}" if ident.kind == "value" else ident.kind, value)


def value_keys(items: Iterable[Any], options: ImportOptions) -> set[str]:
    keys = set()
    for raw in items:
        value = identifier_of(raw)
        try:
            ident = resolve_identifier(options, _override(raw) or options.identifier_property) if value else None
        except ItemFailure:
            continue
        if ident and ident.kind == "value" and value:
            keys.add(value_key(ident.attribute, value))
    return keys


def _override(raw: Any) -> str | None:
    value = raw.get("ProductIdentifierPropertyOverride") if isinstance(raw, dict) else None
    return value if isinstance(value, str) and value else None


def find_product(view: CatalogView, ident: Identifier, value: str) -> str | None:
    if ident.kind == "id":
        return value if is_safe_id(value) and view.product(value) is not None else None
    holders = view.product_holders(value) if ident.kind == "sku" else holders_of(view, value_key(ident.attribute, value))
    if len(holders) > 1:
        raise ItemFailure(
            AMBIGUOUS_IDENTIFIER,
            [
                ItemError(
                    "ambiguous_identifier", f"{ident.label} '{value}' names {len(holders)} products; it must be unique.", "ProductIdentifierValue"
                )
            ],
        )
    return holders[0] if holders else None


# -- values -------------------------------------------------------------------------------------


def _check_value(attr: Attribute, locale: str, value: Any) -> str | None:
    values = value if attr.multi_value and isinstance(value, list) else [value]
    if attr.multi_value and not isinstance(value, list):
        return f"'{attr.name}' holds several values: give a list for {locale}"
    for v in values:
        if attr.type == "number" and (isinstance(v, bool) or not isinstance(v, (int, float, str)) or (isinstance(v, str) and not _is_number(v))):
            return f"'{attr.name}' is a number; {locale} has {v!r:.60}"
        if attr.type == "boolean" and not isinstance(v, bool) and v not in ("true", "false"):
            return f"'{attr.name}' is true or false; {locale} has {v!r:.60}"
        if attr.type == "date" and not (isinstance(v, str) and _is_date(v)):
            return f"'{attr.name}' is a date (YYYY-MM-DD); {locale} has {v!r:.60}"
        if attr.type == "text" and not isinstance(v, (str, int, float, bool)):
            return f"'{attr.name}' is text; {locale} has a {type(v).__name__}"
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text[:10])
        if len(text) > 10:
            datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _key_problem(value: str) -> str | None:
    """Why a payload string cannot be a stored map key (Firestore: non-empty, not __x__, bounded)."""
    if not value.strip():
        return "is empty"
    if value.startswith("__") and value.endswith("__"):
        return "is reserved"
    if len(value.encode()) > 256:
        return "is longer than 256 bytes"
    return None


def _scope_of(recipient: str | None, errors: list[ItemError], where: str) -> str | None:
    if not recipient:
        return GENERAL
    problem = _key_problem(recipient)
    if problem:
        errors.append(ItemError("invalid_value", f"Recipient {problem}.", f"{where}.Recipient"))
        return None
    return recipient


def _attribute(
    options: ImportOptions, name: str, want_asset: bool, errors: list[ItemError], where: str, multi_value: bool = False
) -> Attribute | None:
    problem = _key_problem(name)
    if problem:
        errors.append(ItemError("invalid_value", f"Attribute name {problem}.", f"{where}.Name"))
        return None
    attr = options.vocabulary.find(name)
    if attr is None:
        if options.include_missing:
            # Kept under the name sent; one sent in MultiValues holds a list per locale, like a vocabulary's multi_value.
            return Attribute(name=name, id=name, type="asset" if want_asset else "text", multi_value=multi_value)
        errors.append(ItemError("unknown_attribute", f"Attribute '{name}' is neither an alias nor an attribute id of the vocabulary.", where))
        return None
    if (attr.type == "asset") != want_asset:
        kind = "an asset" if attr.type == "asset" else f"a {attr.type}"
        errors.append(ItemError("wrong_attribute_type", f"Attribute '{name}' is {kind} attribute.", where))
        return None
    return attr


def _apply_values(
    values: dict[str, Any], entries: list[AttributeValue], options: ImportOptions, errors: list[ItemError], multi: bool = False
) -> None:
    """Values, or (`multi`) MultiValues: both land in `values`, a MultiValues locale holding a list.
    A multi_value attribute is also accepted in Values (with a list), as it always was."""
    for n, entry in enumerate(entries):
        where = f"{'MultiValues' if multi else 'Values'}[{n}]"
        attr = _attribute(options, entry.Name, False, errors, where, multi_value=multi)
        if attr is None:
            continue
        if multi and not attr.multi_value:
            errors.append(ItemError("not_multi_value", f"'{attr.name}' holds one value per locale, not a list: send it in Values.", where))
            continue
        bad_locales = [loc for loc in entry.ValuesByLocale if not _LOCALE.match(loc)]
        if bad_locales:
            errors.append(ItemError("invalid_locale", f"'{bad_locales[0][:20]}' is not a locale like en-US.", where))
            continue
        if not attr.locale_aware and len(entry.ValuesByLocale) > 1:
            errors.append(ItemError("not_locale_aware", f"'{attr.name}' is not locale-aware: give one value.", where))
            continue
        # A delete or an explicit null keeps none of the values it names: they need not fit the type.
        checked = not entry.Delete and not entry.IsExplicitNullValue
        problems = [p for loc, v in entry.ValuesByLocale.items() if checked and (p := _check_value(attr, loc, v))]
        if problems:
            errors.append(ItemError("invalid_value", problems[0] + ".", where))
            continue
        scope = _scope_of(entry.Recipient, errors, where)
        if scope is None:
            continue
        scopes = values.setdefault(attr.name, {})
        if entry.Delete:
            current = scopes.get(scope)
            if current and entry.ValuesByLocale:
                for loc in entry.ValuesByLocale:
                    current["by_locale"].pop(loc, None)
            if not entry.ValuesByLocale or (current and not current["by_locale"] and not current.get("explicit_null")):
                scopes.pop(scope, None)
        elif entry.IsExplicitNullValue:
            scopes[scope] = {"by_locale": {}, "explicit_null": True, "source_party": entry.SourceParty or ""}
        else:
            current = scopes.get(scope) or {"by_locale": {}, "explicit_null": False, "source_party": ""}
            current = {**current, "by_locale": {**current["by_locale"], **entry.ValuesByLocale}, "explicit_null": False}
            current["source_party"] = entry.SourceParty or current.get("source_party", "")
            scopes[scope] = current
        if not scopes:
            values.pop(attr.name, None)


def _apply_assets(
    view: CatalogView,
    assets: dict[str, Any],
    entries: list[AssetValue],
    options: ImportOptions,
    errors: list[ItemError],
    registry: dict[str, dict[str, Any]],
) -> None:
    for n, entry in enumerate(entries):
        where = f"AssetValues[{n}]"
        attr = _attribute(options, entry.Name, True, errors, where)
        if attr is None:
            continue
        scope = _scope_of(entry.Recipient, errors, where)
        bad_locales = [loc for loc in entry.ValuesByLocale if not _LOCALE.match(loc)]
        if scope is None or bad_locales:
            if bad_locales:
                errors.append(ItemError("invalid_locale", f"'{bad_locales[0][:20]}' is not a locale like en-US.", where))
            continue
        scopes = assets.setdefault(attr.name, {})
        # A locale's own Recipient makes that locale's asset specific to it; else the entry's applies.
        at = {
            loc: _scope_of(asset.Recipient, errors, f"{where}.ValuesByLocale.{loc}") if asset.Recipient else scope
            for loc, asset in entry.ValuesByLocale.items()
        }
        if entry.Delete:
            if not entry.ValuesByLocale:
                scopes.pop(scope, None)
            for loc, loc_scope in at.items():
                if loc_scope in scopes:
                    scopes[loc_scope].pop(loc, None)
                    if not scopes[loc_scope]:
                        scopes.pop(loc_scope)
        elif entry.IsExplicitNullValue:
            scopes[scope] = {}
        else:
            for loc, asset in entry.ValuesByLocale.items():
                url = asset.Url or asset.URL
                source = asset.SourceUrl or url
                if not source:
                    errors.append(ItemError("missing_field", f"Asset '{attr.name}' ({loc}) needs Url or SourceUrl.", where))
                    continue
                if at[loc] is None:
                    continue
                # One asset per SourceUrl in the tenant: the same source always gets the same id.
                asset_id = derived_id(view.ctx.org_id, view.ctx.tenant_id, "asset", source)
                record = {"asset_id": asset_id, "name": asset.Name, "url": url or source, "source_url": source, "format": asset.Format}
                registry[asset_id] = {**record, "org_id": view.ctx.org_id, "tenant_id": view.ctx.tenant_id}
                scopes.setdefault(at[loc], {})[loc] = {**record, "source_party": asset.SourceParty or entry.SourceParty or ""}
        if not scopes:
            assets.pop(attr.name, None)


def _general_default(values: dict[str, Any], name: str, locale: str) -> Any:
    scope = values.get(name, {}).get(GENERAL)
    return None if scope is None or scope.get("explicit_null") else scope["by_locale"].get(locale)


def _core_from_values(product: dict[str, Any], old_values: dict[str, Any], options: ImportOptions) -> None:
    """Attributes mapped to a core field fill it from the general value in the default locale, when
    the item changed that value: set, deleted or made an explicit null. A value sent only in other
    locales leaves the field as it was: the GTIN a product was created with from its
    ProductIdentifierValue stays, and so the product stays findable by it."""
    locale = options.vocabulary.default_locale
    for attr in {a.name: a for a in options.vocabulary.attributes.values()}.values():
        if not attr.maps_to:
            continue
        values = product.get("values") or {}
        value = _general_default(values, attr.name, locale)
        unset = attr.maps_to not in product and GENERAL in values.get(attr.name, {})
        if unset or value != _general_default(old_values, attr.name, locale):
            product[attr.maps_to] = None if value is None else str(value)


def _identifier_values(product: dict[str, Any], options: ImportOptions) -> dict[str, str]:
    locale = options.vocabulary.default_locale
    out = {}
    for attr in {a.name: a for a in options.vocabulary.attributes.values()}.values():
        if attr.identifier and not attr.maps_to:
            scope = (product.get("values") or {}).get(attr.name, {}).get(GENERAL) or {}
            value = scope.get("by_locale", {}).get(locale)
            if isinstance(value, (str, int)) and str(value):
                out[attr.name] = str(value)
    return out


# -- one product ----------------------------------------------------------------------------


def apply_syndigo_item(view: CatalogView, index: int, raw: Any, options: ImportOptions) -> dict[str, Any]:
    """Apply one ProductsToImport entry; failures are recorded (result + issue), never raised."""
    identifier = identifier_of(raw)
    try:
        return _apply(view, index, raw, options, identifier)
    except ItemFailure as failure:
        return record_failure(view, index, identifier, failure)


def apply_named_before(view: CatalogView, index: int, raw: Any, options: ImportOptions) -> dict[str, Any]:
    """An entry whose product an earlier chunk of its job names too, in a pass that commits nothing
    (whatIf, ErrorMode Fail's validation). The chunks run in order, but that chunk's products were not
    committed: when the store lacks the product, the earlier entry is what would create it (or fail,
    and the job with it). So a Create fails as it would then, and an Update or a CreateOrUpdate is
    checked as one that creates it, and answers as the update it would be."""
    mode = raw.get("ImportMode") if isinstance(raw, dict) else None
    if mode not in (ImportModeValue.Create, ImportModeValue.Update, ImportModeValue.CreateOrUpdate):
        return apply_syndigo_item(view, index, raw, options)
    out = apply_syndigo_item(
        view, index, {**raw, "ImportMode": ImportModeValue.CreateOrUpdate.value} if mode == ImportModeValue.Update else raw, options
    )
    if out["result"] != CREATED:
        return out
    if mode == ImportModeValue.Create:
        error = ItemError(
            "identifier_conflict", "An earlier product of this job creates this product; ImportMode Create only creates.", "ProductIdentifierValue"
        )
        return record_failure(view, index, out["identifier"], ItemFailure(IDENTIFIER_CONFLICT, [error]))
    return {**out, "result": UPDATED, "product_id": None}


def _apply(view: CatalogView, index: int, raw: Any, options: ImportOptions, identifier: str | None) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ItemFailure(IMPORT_REJECTED, [ItemError("invalid_item", "Each entry of ProductsToImport must be an object.")])
    try:
        item = ProductToImport.model_validate(raw)
    except ValidationError as exc:
        raise ItemFailure(IMPORT_REJECTED, _validation_errors(exc)) from None
    if item.ImportMode == ImportModeValue.ExportOnly:
        raise ItemFailure(
            IMPORT_REJECTED,
            [ItemError("export_only", "ImportMode ExportOnly applies to exported payloads only; products cannot be imported with it.", "ImportMode")],
        )
    ident = resolve_identifier(options, item.ProductIdentifierPropertyOverride or options.identifier_property)
    value = item.ProductIdentifierValue
    product_id = find_product(view, ident, value)
    if item.ImportMode == ImportModeValue.Create and product_id is not None:
        raise ItemFailure(
            IDENTIFIER_CONFLICT,
            [
                ItemError(
                    "identifier_conflict",
                    f"{ident.label} '{value}' already names a product; ImportMode Create only creates.",
                    "ProductIdentifierValue",
                )
            ],
            product_id,
        )
    if item.ImportMode == ImportModeValue.Update and product_id is None:
        raise ItemFailure(
            PRODUCT_NOT_FOUND,
            [ItemError("product_not_found", f"No product with {ident.label} '{value}'; ImportMode Update only updates.", "ProductIdentifierValue")],
        )
    if ident.kind == "id" and product_id is None:
        raise ItemFailure(PRODUCT_NOT_FOUND, [ItemError("product_not_found", f"No product with id '{value[:100]}'.", "ProductIdentifierValue")])

    errors: list[ItemError] = []
    creating = product_id is None
    if product_id is None:
        product_id = derived_id(view.ctx.job_id, index, "product")
        view.products.setdefault(product_id, None)
    old = view.product(product_id) or {}
    new: dict[str, Any] = {k: v for k, v in old.items()}
    # Deep copies: the loaded product stays as committed even when this item fails half-way.
    new["values"] = copy.deepcopy(old.get("values") or {})
    new["assets"] = copy.deepcopy(old.get("assets") or {})
    if creating and ident.kind == "value" and ident.attribute != "gtin" and ident.attribute not in new["values"]:
        # The identifier is a value of its attribute: stored as one, it stays indexed through later updates.
        locale = options.vocabulary.default_locale
        new["values"][ident.attribute] = {GENERAL: {"by_locale": {locale: value}, "explicit_null": False, "source_party": ""}}
    _apply_values(new["values"], item.Values, options, errors)
    _apply_values(new["values"], item.MultiValues, options, errors, multi=True)
    asset_records: dict[str, dict[str, Any]] = {}
    _apply_assets(view, new["assets"], item.AssetValues, options, errors, asset_records)
    _core_from_values(new, old.get("values") or {}, options)
    if creating and ident.kind == "sku" and not new.get("sku"):
        new["sku"] = value
    if creating and ident.kind == "value" and ident.attribute == "gtin" and not new.get("gtin"):
        new["gtin"] = value
    new["identifier_values"] = _identifier_values(new, options)

    missing_nodes = [n for n, doc in view.loader.taxonomy_nodes(item.TaxonomyNodes).items() if doc is None] if item.TaxonomyNodes else []
    if missing_nodes:
        errors.append(
            ItemError("taxonomy_node_not_found", f"Taxonomy node '{missing_nodes[0][:100]}' does not exist in this tenant.", "TaxonomyNodes")
        )
    parents = []
    try:
        for detail in item.parents():
            parent_ids = holders_of(view, value_key("gtin", detail.ProductIdentifier))
            if len(parent_ids) != 1:
                errors.append(
                    ItemError(
                        "parent_not_found", f"Parent GTIN '{detail.ProductIdentifier}' must name one existing product.", "ImmediateParentDetails"
                    )
                )
                continue
            parents.append({"product_id": parent_ids[0], "identifier": detail.ProductIdentifier, "quantity": detail.Quantity})
    except ValidationError as exc:
        errors.extend(_validation_errors(exc))
    lifecycle = dict(old.get("lifecycle") or {})
    if item.LifeCycle:
        for name, key in (("DiscontinueDate", "discontinue_date"), ("DeleteDate", "delete_date")):
            entry = getattr(item.LifeCycle, name)
            if entry is None:
                continue
            if entry.Delete:
                lifecycle.pop(key, None)
            elif entry.Value is not None and not _is_date(entry.Value):
                errors.append(ItemError("invalid_value", f"LifeCycle.{name} must be a date (YYYY-MM-DD).", f"LifeCycle.{name}"))
            elif entry.Value is not None:
                lifecycle[key] = entry.Value
        # CreatedDate is the system's: an exported payload sent back carries it, and it is ignored.
    if errors:
        raise ItemFailure(IMPORT_REJECTED, errors, None if creating else product_id)
    for asset_id, record in asset_records.items():
        view.extra_writes[("assets", asset_id)] = record

    # The vendor's payload clears with Delete flags, and its own example sends empty placeholders
    # ("TaxonomyNodes": [], "ImmediateParentDetails": {}): a field left out or empty keeps the
    # product's value. Archived is a flag: sent, it is the product's; else the envelope's true archives.
    given = {
        "taxonomy_nodes": item.TaxonomyNodes,
        "parents": parents,
        "package_type": item.PackageType,
        "recipients_to_link": item.RecipientsToLink,
        "recipients_requirement_sets": item.RecipientsRequirementSets,
        "catalog_items": [c.model_dump() for c in item.CatalogItems],
        "workflow_id": item.WorkflowId,
        "source_parties": item.SourceParties,
        "container_values": item.ContainerValues,
        "complex_values": item.ComplexValues,
        "nutritional_information_module": item.NutritionalInformationModule,
    }
    new.update({key: old.get(key, value) if value in (None, [], {}) else value for key, value in given.items()})
    archived = item.Archived if "Archived" in item.model_fields_set else options.archived or old.get("archived", False)
    new.update({"lifecycle": lifecycle, "archived": archived, "vocabulary_id": options.vocabulary.id})
    if not new.get("title"):
        new["title"] = None
    audits_before = len(view.audits)
    outcome = save_product(view, index, product_id, new, identifiers=[identifier], extra_details={"source": "ProductImportData"})
    out = result(index, identifier, product_id, outcome)
    if options.verbose:
        out["changes"] = value_changes(old, new)
        issues = [a["details"].get("issues", []) for a in view.audits[audits_before:] if a["entity_id"] == product_id]
        out["issues"] = [i for group in issues for i in group]
    return out


def value_changes(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """What changed, attribute by attribute and locale by locale (verbose=true)."""
    changes = []
    for attr in sorted(set(old.get("values") or {}) | set(new.get("values") or {})):
        before = (old.get("values") or {}).get(attr, {})
        after = (new.get("values") or {}).get(attr, {})
        for scope in sorted(set(before) | set(after)):
            b, a = before.get(scope, {}), after.get(scope, {})
            for locale in sorted(set(b.get("by_locale", {})) | set(a.get("by_locale", {}))):
                ov, nv = b.get("by_locale", {}).get(locale), a.get("by_locale", {}).get(locale)
                if ov != nv:
                    changes.append({"attribute": attr, "recipient": None if scope == GENERAL else scope, "locale": locale, "old": ov, "new": nv})
            if bool(b.get("explicit_null")) != bool(a.get("explicit_null")):
                changes.append(
                    {
                        "attribute": attr,
                        "recipient": None if scope == GENERAL else scope,
                        "locale": None,
                        "old": b.get("explicit_null", False),
                        "new": a.get("explicit_null", False),
                        "explicit_null": True,
                    }
                )
    return changes
