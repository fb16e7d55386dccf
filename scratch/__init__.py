"""twinnet.scratch: the NumPy engine (hand-written forward and backward passes).

Pure NumPy: nothing in this package may import TensorFlow or Keras.

    zoo           the architectures, declared once as data (shared with keras_impl)
    famous        LeNet-5, AlexNet, VGG-16, Inception-v4 as data, for parameter tables
    layers        the readable forward/backward pairs: dense, relu, flatten, dropout, conv2d,
                  maxpool2d, avgpool2d, globalavgpool2d, batchnorm, layernorm, groupnorm
    windows       the sliding-window geometry conv2d and pooling share: padding, strides, views
    residual      the ResNet basic block's pair, composed of the readable layers
    fast_layers   the same numbers, faster: im2col, bit masks, fused ReLU (the default path)
    layer_classes Dense, Conv2D, MaxPool2D, ...: params and grads around the pairs
    registry      every layer kind declared once: shapes, formula, NumPy and Keras layer
    layer_shapes  each kind's output and parameter shapes, formulas and FLOPs (for registry)
    initializers  Keras's kernel initializers (glorot_uniform, he_uniform, he_normal)
    losses        softmax cross-entropy from logits, the L2 penalty
    optim         SGD (momentum, Nesterov) and Adam with Keras's update formulas
    model         build_model(name) -> Model; parameter tables; save_npz / load_npz
    gradcheck     central differences against the hand-written gradients
    autodiff      a reverse-mode tape on NumPy arrays: what tf.GradientTape does (notebook 5)
    train         the training loops and checkpoints (their command line, on tf.data
                  batches, is comparison.scratch_train)
"""
