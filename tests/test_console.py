"""The console: library chatter is kept off the terminal (and in train.log), unless --verbose."""

from __future__ import annotations

import subprocess
import sys

from medchat.cli import parse_args


def test_verbose_is_accepted_before_or_after_the_verb() -> None:
    assert parse_args(["--verbose", "config"]).verbose
    assert parse_args(["config", "--verbose"]).verbose
    assert not parse_args(["config"]).verbose


def _child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


QUIET = """
import logging, warnings
from medchat.console import quiet_libraries, library_log
quiet_libraries()
from transformers.utils import logging as hf
with library_log.to({path!r}):
    hf.get_logger("transformers.modeling_utils").warning("tied weights chatter")
    warnings.warn("deprecated thing", FutureWarning)
    logging.getLogger("bitsandbytes.cpu").warning("no kernels")
hf.get_logger("transformers.modeling_utils").warning("after the run")
print("done")
"""


def test_quiet_libraries_moves_records_and_warnings_to_the_run_log(tmp_path) -> None:
    log = tmp_path / "train.log"
    done = _child(QUIET.format(path=str(log)))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done\n" and done.stderr == ""
    text = log.read_text()
    assert "tied weights chatter" in text and "deprecated thing" in text and "no kernels" in text
    assert "after the run" not in text  # outside a run: dropped, not printed


def test_without_quiet_the_libraries_print_as_usual() -> None:
    code = 'from transformers.utils import logging as hf\nhf.get_logger("transformers.x").warning("chatter")'
    assert "chatter" in _child(code).stderr
