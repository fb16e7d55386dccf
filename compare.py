"""twinnet's main job: train the NumPy and the Keras model side by side (not yet implemented)."""
import sys


def main() -> int:
    print("compare.py is not yet implemented: see `python -m keras_impl.data --info` for now.",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
