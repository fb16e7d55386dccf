"""compare.py is only a command line: each subcommand shows and takes its own options."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

import compare

ROOT = Path(__file__).resolve().parent.parent
RUN_ONLY = {"--epochs", "--inject", "--logdir"}  # the main job's alone
OPTIONS = {  # every subcommand's options, exactly
    "params": {"--model", "--json", "--all", "--hidden"},
    "gradcheck": {"--model", "--json", "--batch-size", "--seed"},
    "bench": {"--model", "--json", "--data-dir", "--readme", "--busy", "--quick"},
    "profile": {"--model", "--json", "--data-dir", "--batch-size", "--figure"},
    "exercise": {"--out", "--force", "--list"},
    "check": {"--json", "--layer", "--plots", "--gradebook", "--gradescope", "--jobs", "--timeout",
              "--memory", "--no-network"},
    "bugs": {"--json", "--data-dir", "--bug", "--fast", "--limit"},
    "lab": {"--data-dir", "--port", "--host", "--models", "--cache-dir"},
    "parallel": {"--model", "--replicas", "--sync-bn", "--batch-size", "--seed",
                 "--lockstep-steps", "--dtype", "--optimizer", "--lr", "--momentum",
                 "--nesterov", "--sweep", "--limit", "--workers", "--json", "--data-dir"},
}


def print_help(argv) -> None:
    """`compare.py ARGV --help`, which exits 0."""
    with pytest.raises(SystemExit) as exit_:
        compare.parse_args([*argv, "--help"])
    assert exit_.value.code == 0


def options_in(text: str) -> set[str]:
    """The long options listed in a help text's options section."""
    section = text.split("options:", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"^\s+(?:-\w, )?(--[\w-]+)", section, re.M))


@pytest.mark.parametrize("sub", sorted(OPTIONS))
def test_each_subcommand_lists_only_its_own_options(sub, capsys):
    print_help([sub])
    shown = options_in(capsys.readouterr().out) - {"--help"}
    assert shown == OPTIONS[sub]
    assert not shown & RUN_ONLY


def test_the_main_job_lists_its_options_and_every_subcommand(capsys):
    print_help([])
    text = capsys.readouterr().out
    assert RUN_ONLY <= options_in(text)
    for sub in compare.SUBCOMMANDS:
        assert re.search(rf"^\s+{sub}\s+\S", text, re.M), sub


def test_a_subcommand_refuses_the_main_jobs_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        compare.parse_args(["exercise", "dense", "--epochs", "3"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --epochs 3" in capsys.readouterr().err


def test_bugs_help_names_every_bug_and_the_cheapest_demonstration(capsys):
    from comparison.grading.bugs import BUGS
    from comparison.grading.bugtable import DEMONSTRATION

    print_help(["bugs"])
    text = capsys.readouterr().out
    for name in BUGS:
        assert re.search(rf"^  {re.escape(name)} \(", text, re.M), name
    assert DEMONSTRATION in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_help_imports_only_the_chosen_subcommand():
    """`compare.py params --help` answers without importing TensorFlow."""
    code = ("import sys, compare\n"
            "try:\n    compare.parse_args(['params', '--help'])\n"
            "except SystemExit:\n    pass\n"
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"
