"""twinnet.keras_impl: the TensorFlow/Keras side (course modules data, model, train, test)."""
