"""`python compare.py lab`: the command line of the draw-a-digit lab (see comparison.lab)."""
from __future__ import annotations

import sys

from plumbing.args import nonnegative_int, output_folder


def add_arguments(parser) -> None:
    """`python compare.py lab`'s own options (--data-dir comes from compare.py)."""
    parser.add_argument("--port", type=nonnegative_int, default=8000,
                        help="port to listen on (default 8000; 0: any free port)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this computer only; "
                             "0.0.0.0 lets others on the network in)")
    parser.add_argument("--models", metavar="DIR",
                        help="a trained twin pair: a folder with model.keras (keras_impl.train) "
                             "and/or a .npz (comparison.scratch_train --save), or one such file; "
                             "default: a quick convnet trained on first start and cached")
    parser.add_argument("--cache-dir", metavar="DIR", type=output_folder,
                        help="where the quick convnet is cached (default ~/.cache/twinnet/lab)")


def main(args, console) -> int:
    """Serve until Ctrl-C; the exit status (the lab writes no --json)."""
    from comparison.lab.server import create_app, serve
    from comparison.lab.twins import LabModels, TwinsError, default_cache_dir, load_twins

    if args.models:
        if args.cache_dir:
            print("error: --cache-dir is for the quick model; --models gives the models",
                  file=sys.stderr)
            return 2
        try:
            models = LabModels(load_twins(args.models))
        except TwinsError as err:
            print(f"error: --models {err}", file=sys.stderr)
            return 2
    else:
        models = LabModels()
    app = create_app(models, args.data_dir)
    return serve(app, models, args.host, args.port, args.data_dir,
                 args.cache_dir or default_cache_dir(), start_models=not args.models)
