"""twinnet.keras_impl: the TensorFlow/Keras implementation (course modules data, model, train, test)."""
