"""On a runtime-only install (no TensorFlow), the TensorFlow subcommands say so in one line."""
import subprocess
import sys

import pytest

from lunarseg.cli import TENSORFLOW_COMMANDS

# Makes `import tensorflow` fail in the child as it does where it is not installed.
HIDE_TF = """
import sys, importlib.abc
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'tf_keras'):
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)
sys.meta_path.insert(0, Hide())
from lunarseg.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("argv", [["train", "--data", "d", "--out", "o"], ["evaluate", "m.keras", "--data", "d"]])
def test_tensorflow_subcommand_without_tensorflow_is_one_line_and_exit_2(argv):
    assert argv[0] in TENSORFLOW_COMMANDS
    done = subprocess.run([sys.executable, "-c", HIDE_TF, *argv], capture_output=True,
                          text=True, timeout=60)
    err = done.stderr.strip()
    assert done.returncode == 2, err
    assert err == f"lunarseg {argv[0]}: error: needs TensorFlow (tensorflow is not installed): pip install 'lunarseg[train]'"
