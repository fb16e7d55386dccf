"""What every twinnet command line needs and neither twin is about.

    args        argument types: positive numbers, limits, output and input paths
    cpus        the CPUs free right now: how many BLAS threads help, busy processes
    files       atomic writes: a whole file or the old one
    interrupts  Ctrl-C and SIGTERM acted on between training steps
    quiet       TensorFlow's start-up log lines kept off the terminal
"""
