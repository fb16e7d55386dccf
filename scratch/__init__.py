"""twinnet.scratch: the NumPy engine (hand-written forward and backward passes).

Pure NumPy: nothing in this package may import TensorFlow or Keras.
"""
