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


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["jobs", "--failed", "s3cr3t-token"], "--failed"),  # an option of `job`, not of `jobs`
        (["--failed", "s3cr3t-token", "jobs"], "COMMAND"),  # the word after it became the command
        (["--json", "s3cr3t-token", "jobs"], "COMMAND"),
        (["job", "J-1", "--failed", "s3cr3t-token"], "unrecognized"),  # a flag takes no value: the word is left over
        (["jobs", "--", "s3cr3t-token"], "unrecognized"),
        (["--t=s3cr3t-token", "jobs"], "--t could match"),  # ambiguous: --token or --tenant-id
        (["jobs", "--json=s3cr3t-token"], "--json"),
        (["jobs", "--status", "s3cr3t-token"], "--status: invalid choice"),
        (["jobs", "--limit", "s3cr3t-token"], "--limit"),
        (["jobs", "--limit=s3cr3t-token"], "--limit"),
        (["import", "f.jsonl", "--type", "s3cr3t-token"], "--type: invalid choice"),
        (["issues", "--severity", "s3cr3t-token"], "--severity: invalid choice"),  # shown upper-cased
    ],
)
def test_no_error_echoes_a_word_that_could_be_an_option_s_value(argv: list[str], named: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A known option in the wrong place (or a value refused) made argparse print the word after it,
    which may be a token typed after a misplaced `--token`: the error names the option, not the word."""
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "s3cr3t" not in err.lower() and named in err


def test_a_mistyped_command_or_choice_is_still_named(capsys: pytest.CaptureFixture[str]) -> None:
    """Only a word that could be an option's value is hidden: `jbos` is no option's, and the
    choices argparse lists are synqctl's own words."""
    with pytest.raises(SystemExit):
        parse_args(["--token=t-1", "jbos"])
    assert "invalid choice: 'jbos' (choose from 'import'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["jobs", "--type", "BULK_IMPORT", "--status", "FAILD"])
    assert "(choose from 'PENDING', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELLED')" in capsys.readouterr().err
