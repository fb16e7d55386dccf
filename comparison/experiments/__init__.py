"""The course experiments; each writes <out>/<name>.json and <out>/<name>.png.

    python -m comparison.experiments epochs      [--models fc128 convnet] [--epochs 30]
    python -m comparison.experiments l2-sweep    [--epochs 40] [--factors F ...] [--replicates 3]
    python -m comparison.experiments own-digits  [--model-path M.keras | --model convnet]
    python -m comparison.experiments complexity  [--models ...] [--epochs 5] [--from-json FILE]
    python -m comparison.experiments.accuracy run keras-best [--seeds 0 1 2]   # docs/accuracy.md's table

epochs      train and validation accuracy per epoch; the chosen epoch is the one with
            the best validation accuracy.
l2-sweep    Hinton's 784-500-300-10 net (mlp500) with L2 factors log-spaced from 1e-6 to
            1e-3, several seeds each: final validation accuracy mean +- std per factor
            against the 98.47% of LeCun's MNIST table, and the best run's test accuracy.
own-digits  digits drawn with pillow (fonts, rotation, thick strokes), or your own PNGs
            named <digit>_<anything>.png, classified by `python -m keras_impl.test --apply`.
complexity  trainable parameters against test accuracy for zoo models.
accuracy    fixed training recipes over several seeds, both implementations, summarised.

Every training is keras_impl.train's (the custom GradientTape loop unless --loop fit),
one folder per run under <out>/runs/ with its TensorBoard logs, checkpoints and final
model (experiments.runs). Rerunning a command after an interruption reuses the
finished runs and resumes the unfinished one from its last checkpoint, so at most one
epoch is lost; the per-epoch history is read back from each run's TensorBoard event
files, which hold every epoch, resumed or not. --fast shrinks everything for smoke
tests and notebooks. One module per experiment; the command line is __main__.py.
"""
