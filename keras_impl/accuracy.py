"""`python -m keras_impl.accuracy run|table ...`: README's accuracy table.

The recipes, the runs and the table are keras_impl.experiments.accuracy; this module
keeps the command's name.
"""
import keras_impl.quiet  # noqa: F401  first: quiets TensorFlow's start-up (see there)
import sys

from keras_impl.data import run_cli
from keras_impl.experiments.accuracy import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
