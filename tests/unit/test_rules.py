"""Data-quality rules: GS1 barcodes, descriptions, the completeness score and duplicate SKUs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.domain import rules
from common.domain.rules import ERROR, WARNING, duplicate_sku_finding, evaluate, gtin_problem, product_skus, quality_score


def gs1_check_digit(data: str) -> int:
    """The GS1 check digit, computed the way the GS1 spec tabulates it: left-padded to 17 data
    digits, weights 3,1,3,… from the left (independent of the implementation under test)."""
    padded = data.rjust(17, "0")
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(padded))
    return (10 - total % 10) % 10


# Published examples: EAN-8, UPC-A, EAN-13 and an ITF-14 style GTIN-14.
VALID_GTINS = {
    8: "96385074",
    12: "036000291452",
    13: "4006381333931",
    14: "10012345678902",
}
MORE_VALID = ["73513537", "012345678905", "5901234123457", "00012345600012", "9780306406157"]


def _keys(findings: list[rules.Finding]) -> list[str]:
    return [f.key for f in findings]


# -- GTIN ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("gtin", [*VALID_GTINS.values(), *MORE_VALID])
def test_reference_check_digit_agrees_with_the_examples(gtin: str) -> None:
    assert gs1_check_digit(gtin[:-1]) == int(gtin[-1])


@pytest.mark.parametrize("length", sorted(VALID_GTINS))
def test_valid_gtin_of_every_length(length: int) -> None:
    gtin = VALID_GTINS[length]
    assert len(gtin) == length
    assert gtin_problem(gtin) is None


@pytest.mark.parametrize("gtin", MORE_VALID)
def test_more_valid_gtins(gtin: str) -> None:
    assert gtin_problem(gtin) is None


@pytest.mark.parametrize(
    ("gtin", "wrong"),
    [(gtin, d) for gtin in VALID_GTINS.values() for d in range(10) if d != int(gtin[-1])],
)
def test_every_wrong_check_digit_is_refused(gtin: str, wrong: int) -> None:
    bad = gtin[:-1] + str(wrong)
    assert gtin_problem(bad) == f"has check digit {wrong}; the GS1 check digit is {gtin[-1]}"


@pytest.mark.parametrize("length", [1, 7, 9, 10, 11, 15, 16, 18])
def test_wrong_lengths_are_refused(length: int) -> None:
    digits = ("1234567890" * 2)[:length]
    assert gtin_problem(digits) == f"has {length} digits; a GTIN has 8, 12, 13 or 14"


@pytest.mark.parametrize(
    "value",
    [
        "9638507A",  # a letter
        "ABCDEFGH",
        "9638-5074",
        " 96385074",
        "96385074 ",
        "9638 507",
        "+9638507",
        "9.638507",
        "",
        "١٢٣٤٥٦٧٨",  # Arabic-Indic digits: isdigit() is True, but they are not GTIN digits
        "９６３８５０７４",  # fullwidth digits of a valid GTIN-8
        "9638507⁴",  # superscript four
        "٩٦٣٨٥٠٧٤",
    ],
)
def test_non_ascii_digits_or_other_characters_are_refused(value: str) -> None:
    assert gtin_problem(value) == "must contain digits only"


@settings(max_examples=200, deadline=None)
@given(
    data=st.sampled_from([7, 11, 12, 13]).flatmap(lambda n: st.text("0123456789", min_size=n, max_size=n)),
    offset=st.integers(1, 9),
)
def test_check_digit_property(data: str, offset: int) -> None:
    check = gs1_check_digit(data)
    assert gtin_problem(data + str(check)) is None
    wrong = (check + offset) % 10
    assert gtin_problem(data + str(wrong)) == f"has check digit {wrong}; the GS1 check digit is {check}"


def test_invalid_barcode_finding_names_each_bad_gtin_product_and_variant() -> None:
    product = {
        "title": "T",
        "description": "d" * 50,
        "gtin": "96385075",
        "variants": [{"sku": "V1", "gtin": "4006381333931"}, {"sku": "V2", "gtin": "12345"}],
    }
    [finding] = [f for f in evaluate(product, [], 0) if f.key == "INVALID_BARCODE"]
    assert finding.issue_type == "INVALID_BARCODE"
    assert finding.severity == ERROR
    assert finding.message == (
        "Invalid GTIN: '96385075' has check digit 5; the GS1 check digit is 4; "
        "'12345' has 5 digits; a GTIN has 8, 12, 13 or 14. "
        "Correct the barcode (GTIN-8/12/13/14 with a valid check digit)."
    )


def test_valid_gtins_raise_no_barcode_finding() -> None:
    product = {"title": "T", "gtin": "96385074", "variants": [{"gtin": "036000291452"}, {"gtin": None}]}
    assert "INVALID_BARCODE" not in _keys(evaluate(product, [], 0))
    assert rules.product_gtins(product) == ["96385074", "036000291452"]


# -- MISSING_DESCRIPTION -------------------------------------------------------------------------


@pytest.mark.parametrize("description", [None, "", "   ", "\n\t "])
def test_missing_description(description: str | None) -> None:
    product = {"title": "T", "description": description}
    [finding] = [f for f in evaluate(product, [], 0) if f.key == "MISSING_DESCRIPTION"]
    assert finding.issue_type == "MISSING_DESCRIPTION"
    assert finding.severity == WARNING
    assert finding.message == "Product has no description. Add one to improve SEO and customer experience."


def test_absent_description_key_is_missing() -> None:
    assert "MISSING_DESCRIPTION" in _keys(evaluate({"title": "T"}, [], 0))


@pytest.mark.parametrize("description", ["x", " short ", "d" * 200])
def test_present_description(description: str) -> None:
    assert "MISSING_DESCRIPTION" not in _keys(evaluate({"title": "T", "description": description}, [], 0))


# -- quality score -------------------------------------------------------------------------------


def test_weights_add_up_to_one_hundred() -> None:
    assert sum(rules.SCORE_WEIGHTS.values()) == 100


FULL = {
    "title": "Merino Wool Crew Neck Sweater",
    "description": "100% Grade-A merino wool, knitted in Portugal.",
    "category": "Knitwear",
    "brand": "NordicThread",
    "sku": "MWS-RED-S",
    "gtin": "4006381333931",
    "attributes": {"colour": "red"},
}


def test_complete_product_scores_one_hundred() -> None:
    assert len(FULL["description"]) >= rules.DESCRIPTION_FULL
    assert quality_score(FULL) == 100


@pytest.mark.parametrize(
    ("field", "weight"),
    [("title", 20), ("description", 25), ("category", 15), ("brand", 15), ("sku", 10), ("gtin", 10), ("attributes", 5)],
)
def test_each_field_weight(field: str, weight: int) -> None:
    without = {k: v for k, v in FULL.items() if k != field}
    assert quality_score(without) == 100 - weight


def test_empty_product_scores_zero() -> None:
    assert quality_score({}) == 0


def test_title_only_scores_twenty() -> None:
    assert quality_score({"title": "T"}) == 20


@pytest.mark.parametrize(
    ("description", "points"),
    [
        ("d" * 40, 25),
        ("d" * 39, 10),
        ("d", 10),
        ("  " + "d" * 39 + "  ", 10),  # length counts after stripping
        ("  " + "d" * 40 + "  ", 25),
        ("     ", 0),
        (None, 0),
    ],
)
def test_description_points(description: str | None, points: int) -> None:
    assert quality_score({"description": description}) == points


@pytest.mark.parametrize("field", ["title", "category", "brand", "sku"])
@pytest.mark.parametrize("value", ["", "   ", None, 7, ["x"]])
def test_blank_or_non_text_fields_earn_nothing(field: str, value: object) -> None:
    assert quality_score({field: value}) == 0


@pytest.mark.parametrize(("gtin", "points"), [("4006381333931", 10), ("4006381333932", 0), ("abc", 0), ("", 0), (None, 0)])
def test_gtin_points_only_for_a_valid_gtin(gtin: str | None, points: int) -> None:
    assert quality_score({"gtin": gtin}) == points


@pytest.mark.parametrize(("extra", "points"), [({"attributes": {"a": 1}}, 5), ({"attributes": {}}, 0), ({"values": [1]}, 5)])
def test_attribute_points(extra: dict[str, object], points: int) -> None:
    assert quality_score(extra) == points


def test_variant_gtin_and_sku_do_not_score() -> None:
    assert quality_score({"variants": [{"sku": "V", "gtin": "96385074"}]}) == 0


# -- LOW_QUALITY_SCORE ----------------------------------------------------------------------------

SEVENTY = {"title": "T", "category": "C", "brand": "B", "sku": "S", "description": "too short"}  # 20+15+15+10+10


def test_threshold_fixture_scores_seventy() -> None:
    assert quality_score(SEVENTY) == 70


@pytest.mark.parametrize(("threshold", "flagged"), [(69, False), (70, False), (71, True), (0, False), (100, True)])
def test_low_quality_threshold_boundary(threshold: int, flagged: bool) -> None:
    assert ("LOW_QUALITY_SCORE" in _keys(evaluate(SEVENTY, [], threshold))) is flagged


def test_low_quality_message_names_score_threshold_and_missing_fields() -> None:
    [finding] = [f for f in evaluate({"title": "T", "brand": "B"}, [], 60) if f.key == "LOW_QUALITY_SCORE"]
    assert finding.severity == WARNING
    assert finding.issue_type == "LOW_QUALITY_SCORE"
    assert finding.message == ("Data quality score is 35/100, below the tenant's threshold of 60. Fill in: description, category, sku, gtin.")


def test_low_quality_message_without_missing_fields_has_no_hint() -> None:
    product = {**FULL, "gtin": "4006381333932"}  # present but invalid: 90
    [finding] = [f for f in evaluate(product, [], 95) if f.key == "LOW_QUALITY_SCORE"]
    assert finding.message == "Data quality score is 90/100, below the tenant's threshold of 95."


def test_low_quality_hint_lists_a_blank_description() -> None:
    product = {"title": "T", "description": "   ", "category": "C", "brand": "B", "sku": "S", "gtin": "96385074"}
    findings = {f.key: f for f in evaluate(product, [], 100)}
    assert "MISSING_DESCRIPTION" in findings
    assert "Fill in: description." in findings["LOW_QUALITY_SCORE"].message


# -- DUPLICATE_SKU --------------------------------------------------------------------------------


def test_duplicate_sku_message_is_exact() -> None:
    finding = duplicate_sku_finding("MWS-RED-S")
    assert finding.key == "DUPLICATE_SKU:MWS-RED-S"
    assert finding.issue_type == "DUPLICATE_SKU"
    assert finding.severity == ERROR
    assert finding.message == "SKU 'MWS-RED-S' is used by more than one variant in this tenant."


def test_evaluate_emits_one_duplicate_finding_per_distinct_sku_sorted() -> None:
    findings = evaluate(FULL, ["B", "A", "B"], 0)
    assert _keys(findings) == ["DUPLICATE_SKU:A", "DUPLICATE_SKU:B"]


def test_evaluate_of_a_perfect_product_finds_nothing() -> None:
    assert evaluate(FULL, [], 100) == []


def test_evaluate_order_is_stable() -> None:
    product = {"title": "T", "gtin": "1"}
    assert _keys(evaluate(product, ["S"], 60)) == [
        "MISSING_DESCRIPTION",
        "INVALID_BARCODE",
        "LOW_QUALITY_SCORE",
        "DUPLICATE_SKU:S",
    ]


# -- product_skus ----------------------------------------------------------------------------------


def test_product_skus_counts_product_and_variant_skus() -> None:
    product = {
        "sku": "P",
        "variants": [{"sku": "V1"}, {"sku": "P"}, {"sku": "V1"}, {"sku": None}, {"sku": ""}, {}],
    }
    assert product_skus(product) == {"P": 2, "V1": 2}


@pytest.mark.parametrize("product", [{}, {"sku": None}, {"sku": ""}, {"variants": None}, {"variants": []}])
def test_product_skus_of_a_product_without_skus(product: dict[str, object]) -> None:
    assert product_skus(product) == {}
