"""Everything that needs both twins: the NumPy engine checked against the Keras twin.

    run           `python compare.py`, the main job: every section below, in order
    params        parameter tables of both twins (`compare.py params`)
    layout        the one NumPy <-> Keras weight mapping (NHWC activations, HWIO kernels)
    twin          a twin pair, gradient agreement, lockstep training
    localize      the first quantity where the twins disagree (and `--inject BUG`)
    sidebyside    both twins trained on the same tf.data batches
    gradtable     numeric vs NumPy vs TensorFlow gradients, one table
    bench         `compare.py bench`: its tables, --busy slowdowns, the table of docs/performance.md
    benchtimes    seconds per epoch, GFLOP/s, input-pipeline share of each engine
    machine       the machine a bench ran on: CPU, cores, BLAS, TensorFlow's kernels
    benchreadme   the bench's table, with the targets, written into docs/performance.md
    memory        peak resident memory of a NumPy training, in a fresh process
    profile       ms, FLOPs and bytes per layer of both twins (`compare.py profile`)
    parallel      `compare.py parallel`: data parallelism by hand against tf.distribute
    scratch_loop  the NumPy model trained on the tf.data batches
    scratch_train the NumPy engine's command line (`python -m comparison.scratch_train`)
    grading/      students' layers checked against both twins (`compare.py check`), the bug zoo
    lab/          the draw-a-digit page where both twins answer (`compare.py lab`)
    experiments/  the course experiments and the accuracy table of docs/accuracy.md
"""
