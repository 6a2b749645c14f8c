"""The README's commands: each parses with the real CLI, every verb is documented with a working
--help, the test command is the one CI runs, and the cheap ones are run for real."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from medchat.cli import build_parser, main, parse_args
from tests.conftest import REPO_ROOT, SHARED_DATA

README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def bash_lines(text: str) -> list[str]:
    """Every command line of the ```bash blocks, comments and continuations resolved."""
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        pending = ""
        for raw in block.splitlines():
            line = pending + raw.strip()
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def medchat_commands() -> list[list[str]]:
    """The README's `medchat ...` commands as argv lists (without `medchat`)."""
    out = []
    for line in bash_lines(README):
        for part in line.split("&&"):
            argv = shlex.split(part.strip())
            if argv and argv[0] == "medchat":
                out.append(argv[1:])
    return out


def verbs() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb")
    return list(sub.choices)


COMMANDS = medchat_commands()


def test_the_readme_has_commands_for_the_whole_tour() -> None:
    used = {argv[0] for argv in COMMANDS}
    assert len(COMMANDS) >= 15
    # every verb of the CLI is shown in a README command
    assert set(verbs()) == used


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a)[:60] for a in COMMANDS])
def test_every_readme_command_parses_and_names_real_files(argv: list[str]) -> None:
    args = parse_args(argv)  # SystemExit (a failure) on any unknown flag
    assert args.verb == argv[0]
    config = getattr(args, "config", None)
    if config:
        assert (REPO_ROOT / config).is_file(), f"README names a missing preset {config}"
    if argv[0] == "ask":  # the question is the quoted text, whatever the option order
        assert args.question == argv[-1] and args.spec in (None, argv[1])


def help_text(command: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("verb", verbs())
def test_every_verb_has_help(verb: str, capsys) -> None:
    text = help_text([verb], capsys)
    assert text.startswith(f"usage: medchat {verb}")
    assert len(text.splitlines()) > 5


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a)[:60] for a in COMMANDS])
def test_help_lists_every_flag_the_readme_uses(argv: list[str], capsys) -> None:
    sub_verbs = {"data", "safety", "index"}  # verbs whose flags belong to a sub-verb
    command = argv[:2] if argv[0] in sub_verbs else argv[:1]
    text = help_text(command, capsys)
    for flag in (a.split("=")[0] for a in argv if a.startswith("--")):
        assert flag in text, f"`medchat {' '.join(command)} --help` does not mention {flag}"


def test_top_level_help_lists_every_verb(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for verb in verbs():
        assert re.search(rf"^\s+{verb}\s", text, flags=re.M), f"{verb} missing from --help"


def test_the_readme_test_command_is_exactly_what_ci_runs() -> None:
    setup = README[README.index("## Set up, run, test") :]
    block = bash_lines(setup[: setup.index("```\n", setup.index("```bash") + 7) + 4])
    assert block[0].startswith("python3 -m venv .venv") and "torch==2.13.0" in block[0]
    assert block[1] == "medchat demo"
    test_command = block[2]
    ci = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command == "python -m pytest" and ci[-1] == test_command
    # CI installs as the README does: the CPU torch first, then the project with every extra.
    assert "pip install -q torch==2.13.0" in ci and 'pip install -q -e ".[all,dev]"' in ci


@pytest.mark.medquad
def test_the_readme_data_and_safety_commands_run(tmp_path: Path, capsys) -> None:
    runs = str(tmp_path / "runs")
    ran = 0
    for argv in COMMANDS:
        if argv[0] not in ("data", "safety", "config"):
            continue
        argv = [
            a.replace("../shared/data", str(SHARED_DATA)).replace("runs/", runs + "/") for a in argv
        ]
        assert main(argv) == 0, argv
        ran += 1
    assert ran == 4
    out = capsys.readouterr().out
    assert (tmp_path / "runs" / "data" / "manifest.json").is_file()
    assert "EMERGENCY [stroke]" in out
