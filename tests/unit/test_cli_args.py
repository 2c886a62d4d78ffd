"""How synqctl reads its command line (no API involved)."""

from __future__ import annotations

import pytest

from synqctl.cli import parse_args


@pytest.mark.parametrize(
    "argv",
    [
        ["--tokne", "s3cr3t-token", "jobs"],
        ["jobs", "--tokne", "s3cr3t-token"],
        ["jobs", "--tokne=s3cr3t-token"],
        ["notify", "show", "--tok3n", "s3cr3t-token"],
    ],
)
def test_an_unknown_option_is_named_without_the_secret_after_it(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "s3cr3t-token" not in err and "unrecognized option --to" in err


def test_known_options_and_their_abbreviations_still_parse() -> None:
    args = parse_args(["--toke", "t-1", "jobs", "--lim", "5", "--status", "FAILED"])

    assert (args.token, args.limit, args.status) == ("t-1", 5, "FAILED")


@pytest.mark.parametrize("argv", [["jobs", "-ts3cr3t-token"], ["-Ts3cr3t-token", "jobs"], ["jobs", "-hs3cr3t-token"]])
def test_a_short_option_with_its_value_attached_is_named_without_the_value(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """`-tVALUE` is argparse's -t with VALUE attached: naming the whole word would print the token."""
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "s3cr3t-token" not in err and "unrecognized option -" in err


def test_a_value_that_starts_with_a_dash_and_holds_a_space_is_a_value() -> None:
    """argparse reads "-A B" as a value, not an option; so does the check before it."""
    assert parse_args(["products", "--sku", "-A B"]).sku == "-A B"
