"""Every command's --help works and exits 0, and every option says what it is for."""

from __future__ import annotations

import argparse

import pytest

from speaker_grouping.cli import _BENCH_TOOLS, _parser, main


def subcommands() -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices)


@pytest.mark.parametrize("command", sorted(subcommands()))
def test_help_of_every_command_exits_zero(command, capsys):
    with pytest.raises(SystemExit) as stopped:
        main([command, "--help"])
    assert stopped.value.code == 0
    assert f"speaker-grouping {command}" in capsys.readouterr().out


def test_bench_help_lists_the_tools_and_a_tool_help_reaches_the_tool(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["bench", "--help"])
    assert stopped.value.code == 0
    listed = capsys.readouterr().out
    assert all(tool in listed for tool in _BENCH_TOOLS)
    with pytest.raises(SystemExit) as stopped:
        main(["bench", "quality", "--help"])
    assert stopped.value.code == 0
    assert "--episodes" in capsys.readouterr().out  # the tool's own option, not bench's


@pytest.mark.parametrize("command", sorted(set(subcommands()) - {"bench"}))
def test_every_option_has_help(command):
    parser = subcommands()[command]
    silent = [
        action.option_strings[0]
        for action in parser._actions
        if action.option_strings and not action.help
    ]
    assert not silent, f"{command}: options without help text: {silent}"


@pytest.mark.parametrize(
    ("command", "required", "reads_url"),
    [
        ("import", ["episode.mkv", "--out", "out"], False),
        ("export", ["--project", "1", "--out", "out"], True),
        ("report", ["--project", "1"], True),
    ],
)
def test_label_studio_options_default_to_the_environment(monkeypatch, command, required, reads_url):
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:8080")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "token-from-env")
    args = _parser().parse_args([command, *required])
    assert args.api_key == "token-from-env"
    if reads_url:
        assert args.url == "http://127.0.0.1:8080"
    given = _parser().parse_args([command, *required, "--api-key", "given"])
    assert given.api_key == "given"
