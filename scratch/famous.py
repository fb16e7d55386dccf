"""Famous ImageNet-era architectures declared as data, counted layer by layer.

LeNet-5, AlexNet, VGG-16 and Inception-v4 are layer lists (`FAMOUS`), each
starting with its `Input`. `famous_rows(name)` walks a list and gives, per
layer, the output shape (NHWC, batch dim omitted) and the parameter count with
its formula as `zoo.ParamRow`s, so lecturer tables can put them next to the zoo
models; `famous_total(name)` is the sum. Nothing here is typed in: every total
follows from the declarations. Activations are left out: they have no
parameters and keep the shape.

Layers the zoo has too (dense, flatten, stride-1 square convolutions with bias,
pooling with stride = window) are counted by their `scratch.registry` entry.

`Concat` holds parallel branches that all read the same input and are joined
along channels (Inception blocks); branch rows are labelled
`<block>/b<j>/<layer>`. Convolutions followed by BatchNorm count the trainable
gamma and beta; the moving mean and variance (another 2 per channel) are
non-trainable and not counted.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from scratch.layer_shapes import NO_WEIGHTS, param_count, window_out
from scratch.registry import LayerSpec, kind_of
from scratch.zoo import ParamRow


def _pair(k):
    return (k, k) if isinstance(k, int) else tuple(k)


def _registry_row(spec: LayerSpec, shape):
    """(output shape, count, formula, parameter shapes) as the registry declares `spec`."""
    out, params, formula = kind_of(spec).describe(spec, shape)
    return out, param_count(params), formula, params


@dataclass(frozen=True)
class Input:
    shape: tuple


@dataclass(frozen=True)
class Conv:
    """Convolution, kernel HWIO (kh, kw, cin/groups, filters); with `batchnorm`, BN follows."""

    filters: int
    kernel: int | tuple = 3
    stride: int = 1
    padding: str = "valid"
    groups: int = 1  # AlexNet's two-GPU split: each filter sees cin/groups channels
    bias: bool = True
    batchnorm: bool = False
    name: str = ""

    @property
    def kind(self):
        kh, kw = _pair(self.kernel)
        return f"conv{kh}x{kw}"

    def apply(self, shape):
        (kh, kw), cout, g = _pair(self.kernel), self.filters, self.groups
        if (self.stride, g, self.bias, self.batchnorm, kh) == (1, 1, True, False, kw):
            zoo_conv = LayerSpec("conv2d", filters=cout, kernel_size=kh, padding=self.padding)
            return _registry_row(zoo_conv, shape)
        h, w, cin = shape
        if cin % g or cout % g:
            raise ValueError(f"{cin} input and {cout} output channels must divide by groups={g}")
        out = (window_out(h, kh, self.stride, self.padding),
               window_out(w, kw, self.stride, self.padding), cout)
        cin_text = f"({cin}/{g})" if g > 1 else f"{cin}"
        count = kh * kw * (cin // g) * cout
        terms, params = [f"{kh}*{kw}*{cin_text}*{cout}"], {"kernel": (kh, kw, cin // g, cout)}
        if self.bias:
            count += cout
            terms.append(f"{cout}")
            params["bias"] = (cout,)
        if self.batchnorm:
            count += 2 * cout
            terms.append(f"2*{cout} (BN)")
            params.update(gamma=(cout,), beta=(cout,))
        return out, count, " + ".join(terms) + f" = {count:,}", params


@dataclass(frozen=True)
class PartialConv:
    """LeNet-5's C3: output map j sees only the input maps in `table[j]`, plus one bias each."""

    table: tuple
    kernel: int = 5
    name: str = ""
    kind = "partial_conv"

    def apply(self, shape):
        h, w, cin = shape
        if any(not 0 <= i < cin for inputs in self.table for i in inputs):
            raise ValueError(f"connection table names an input map outside 0..{cin - 1}")
        k, cout = self.kernel, len(self.table)
        out = (window_out(h, k), window_out(w, k), cout)
        by_fan_in = Counter(len(inputs) for inputs in self.table)
        links = sum(len(inputs) for inputs in self.table)
        groups = " + ".join(f"{n}*{fan_in}" for fan_in, n in sorted(by_fan_in.items()))
        count = k * k * links + cout
        return (out, count, f"{k}*{k}*({groups}) + {cout} = {count:,}",
                {"kernels": (links, k, k), "bias": (cout,)})


@dataclass(frozen=True)
class Subsample:
    """LeNet-5's S layers: 2x2 sum times a trainable coefficient plus a bias, per map."""

    name: str = ""
    kind = "subsample"

    def apply(self, shape):
        h, w, c = shape
        count = 2 * c
        return ((h // 2, w // 2, c), count, f"2*{c} (coefficient, bias) = {count:,}",
                {"coefficient": (c,), "bias": (c,)})


@dataclass(frozen=True)
class Pool:
    """Max or average pooling; no weights."""

    mode: str = "max"
    size: int = 2
    stride: int = 2
    padding: str = "valid"
    name: str = ""

    @property
    def kind(self):
        return f"{self.mode}pool"

    def apply(self, shape):
        if (self.stride, self.padding) == (self.size, "valid"):  # the zoo's pooling
            return _registry_row(LayerSpec(f"{self.mode}pool2d", pool_size=self.size), shape)
        h, w, c = shape
        out = (window_out(h, self.size, self.stride, self.padding),
               window_out(w, self.size, self.stride, self.padding), c)
        return out, 0, NO_WEIGHTS, {}


@dataclass(frozen=True)
class NoWeights:
    """A shape-keeping layer without parameters: "lrn" (local response norm) or "dropout"."""

    kind: str
    name: str = ""

    def apply(self, shape):
        return shape, 0, NO_WEIGHTS, {}


@dataclass(frozen=True)
class Flatten:
    name: str = ""
    kind = "flatten"

    def apply(self, shape):
        return _registry_row(LayerSpec("flatten"), shape)


@dataclass(frozen=True)
class GlobalAvgPool:
    name: str = ""
    kind = "global_avgpool"

    def apply(self, shape):
        return (shape[-1],), 0, NO_WEIGHTS, {}


@dataclass(frozen=True)
class Dense:
    units: int
    name: str = ""
    kind = "dense"

    def apply(self, shape):
        return _registry_row(LayerSpec("dense", units=self.units), shape)


@dataclass(frozen=True)
class RBF:
    """LeNet-5's output: unit i gives sum_j (x_j - w_ij)^2, one centre per class, no bias."""

    units: int
    name: str = ""
    kind = "rbf"

    def apply(self, shape):
        if len(shape) != 1:
            raise ValueError(f"rbf needs a flat input, got shape {shape} (add Flatten())")
        (fan_in,), n = shape, self.units
        count = fan_in * n
        return (n,), count, f"{fan_in}*{n} (centres) = {count:,}", {"centres": (fan_in, n)}


@dataclass(frozen=True)
class Concat:
    """Parallel branches (layer lists) on the same input, joined along channels."""

    name: str
    branches: tuple


def _walk(layers, shape, prefix):
    rows = []
    for i, layer in enumerate(layers):
        label = prefix + (layer.name or f"{layer.kind}_{i}")
        if isinstance(layer, Concat):
            outs = []
            for j, branch in enumerate(layer.branches):
                branch_rows, out = _walk(branch, shape, f"{label}/b{j}/")
                rows += branch_rows
                outs.append(out)
            if len({out[:2] for out in outs}) != 1:
                raise ValueError(f"{label}: branch outputs {outs} differ in height/width")
            channels = [out[2] for out in outs]
            shape = (*outs[0][:2], sum(channels))
            formula = "0 (concat " + "+".join(map(str, channels)) + f" = {shape[2]:,} channels)"
            rows.append(ParamRow(f"{label}/concat", shape, formula, 0))
        else:
            try:
                shape, count, formula, params = layer.apply(shape)
            except ValueError as err:  # name the layer
                raise ValueError(f"{label}: {err}") from None
            rows.append(ParamRow(label, shape, formula, count, params))
    return rows, shape


# --- LeNet-5 -----------------------------------------------------------------
# LeCun, Bottou, Bengio, Haffner, "Gradient-based learning applied to document
# recognition", Proc. IEEE 86(11), 1998, Sec. II-B: the faithful version with
# the C3 connection table (Table I), trainable subsampling and RBF outputs.
# Per-layer counts in the paper: C1 156, S2 12, C3 1,516, S4 32, C5 48,120,
# F6 10,164; RBF 84*10 = 840 (its centres are set by hand in the paper, counted
# here as parameters). Total 60,840 (the paper rounds it to "60,000").
LENET5_C3_TABLE = (  # Table I: which S2 maps (0-5) each C3 map (0-15) reads
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)
LENET5 = [
    Input((32, 32, 1)),
    Conv(6, 5, name="C1"), Subsample("S2"), PartialConv(LENET5_C3_TABLE, 5, name="C3"),
    Subsample("S4"), Conv(120, 5, name="C5"), Flatten(), Dense(84, name="F6"),
    RBF(10, name="output"),
]

# --- AlexNet -----------------------------------------------------------------
# Krizhevsky, Sutskever, Hinton, "ImageNet Classification with Deep
# Convolutional Neural Networks", NIPS 2012 (Fig. 2; "60 million parameters"):
# the original two-GPU layout, conv2, conv4 and conv5 in 2 groups, on 227x227x3
# as in Caffe's models/bvlc_alexnet. Total 60,965,224 (62,378,344 ungrouped).
ALEXNET = [
    Input((227, 227, 3)),
    Conv(96, 11, stride=4, name="conv1"), NoWeights("lrn", "lrn1"), Pool("max", 3, 2, name="pool1"),
    Conv(256, 5, padding="same", groups=2, name="conv2"), NoWeights("lrn", "lrn2"),
    Pool("max", 3, 2, name="pool2"),
    Conv(384, 3, padding="same", name="conv3"),
    Conv(384, 3, padding="same", groups=2, name="conv4"),
    Conv(256, 3, padding="same", groups=2, name="conv5"), Pool("max", 3, 2, name="pool5"),
    Flatten(), Dense(4096, name="fc6"), NoWeights("dropout", "drop6"),
    Dense(4096, name="fc7"), NoWeights("dropout", "drop7"), Dense(1000, name="fc8"),
]


# --- VGG-16 ------------------------------------------------------------------
def _vgg16():
    """Simonyan & Zisserman, ICLR 2015, configuration D with the 3 FC layers, 224x224x3,
    1000 classes: 138,357,544 (Table 2 says "138" million; Keras' VGG16 reports the same)."""
    layers = [Input((224, 224, 3))]
    for stage, (filters, convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], 1):
        layers += [Conv(filters, 3, padding="same", name=f"conv{stage}_{i}")
                   for i in range(1, convs + 1)]
        layers.append(Pool("max", 2, 2, name=f"pool{stage}"))
    return layers + [Flatten(), Dense(4096, name="fc6"), NoWeights("dropout", "drop6"),
                     Dense(4096, name="fc7"), NoWeights("dropout", "drop7"),
                     Dense(1000, name="fc8")]


# --- Inception-v4 ------------------------------------------------------------
# Szegedy, Ioffe, Vanhoucke, Alemi, "Inception-v4, Inception-ResNet and the
# Impact of Residual Connections on Learning", arXiv:1602.07261 (2016), Figs.
# 3-9, 299x299x3, 1000 classes; every conv without bias and followed by BN with
# gamma and beta, as in timm's inception_v4 (ported from TF-slim): 42,679,816.
def _cbn(filters, kernel=1, stride=1, padding="same", name=""):
    """Inception's unit: convolution without bias, then BatchNorm (gamma, beta)."""
    return Conv(filters, kernel, stride, padding, bias=False, batchnorm=True, name=name)


def _avg_1x1(filters):
    return [Pool("avg", 3, 1, "same"), _cbn(filters)]


def _stem():
    return [
        _cbn(32, 3, 2, "valid", "stem_conv1"), _cbn(32, 3, 1, "valid", "stem_conv2"),
        _cbn(64, 3, name="stem_conv3"),
        Concat("mixed_3a", ([Pool("max", 3, 2)], [_cbn(96, 3, 2, "valid")])),
        Concat("mixed_4a", ([_cbn(64), _cbn(96, 3, 1, "valid")],
                            [_cbn(64), _cbn(64, (1, 7)), _cbn(64, (7, 1)),
                             _cbn(96, 3, 1, "valid")])),
        Concat("mixed_5a", ([_cbn(192, 3, 2, "valid")], [Pool("max", 3, 2)])),
    ]


def _inception_a(i):
    return Concat(f"inception_a{i}", ([_cbn(96)], [_cbn(64), _cbn(96, 3)],
                                      [_cbn(64), _cbn(96, 3), _cbn(96, 3)], _avg_1x1(96)))


def _reduction_a(k=192, l=224, m=256, n=384):
    return Concat("reduction_a", ([_cbn(n, 3, 2, "valid")],
                                  [_cbn(k), _cbn(l, 3), _cbn(m, 3, 2, "valid")],
                                  [Pool("max", 3, 2)]))


def _inception_b(i):
    return Concat(f"inception_b{i}", (
        [_cbn(384)],
        [_cbn(192), _cbn(224, (1, 7)), _cbn(256, (7, 1))],
        [_cbn(192), _cbn(192, (1, 7)), _cbn(224, (7, 1)), _cbn(224, (1, 7)), _cbn(256, (7, 1))],
        _avg_1x1(128)))


def _reduction_b():
    return Concat("reduction_b", (
        [_cbn(192), _cbn(192, 3, 2, "valid")],
        [_cbn(256), _cbn(256, (1, 7)), _cbn(320, (7, 1)), _cbn(320, 3, 2, "valid")],
        [Pool("max", 3, 2)]))


def _split_1x3_3x1(filters):
    return Concat("split", ([_cbn(filters, (1, 3))], [_cbn(filters, (3, 1))]))


def _inception_c(i):
    return Concat(f"inception_c{i}", (
        [_cbn(256)],
        [_cbn(384), _split_1x3_3x1(256)],
        [_cbn(384), _cbn(448, (1, 3)), _cbn(512, (3, 1)), _split_1x3_3x1(256)],
        _avg_1x1(256)))


def _inception_v4():
    return ([Input((299, 299, 3))] + _stem()
            + [_inception_a(i) for i in range(1, 5)] + [_reduction_a()]
            + [_inception_b(i) for i in range(1, 8)] + [_reduction_b()]
            + [_inception_c(i) for i in range(1, 4)]
            + [GlobalAvgPool("avg_pool"), NoWeights("dropout", "dropout"),
               Dense(1000, name="logits")])


FAMOUS: dict[str, list] = {
    "lenet5": LENET5,
    "alexnet": ALEXNET,
    "vgg16": _vgg16(),
    "inception_v4": _inception_v4(),
}


def _layers(name_or_layers):
    if not isinstance(name_or_layers, str):
        layers = list(name_or_layers)
    elif name_or_layers in FAMOUS:
        layers = FAMOUS[name_or_layers]
    else:
        raise KeyError(f"unknown famous model {name_or_layers!r}: "
                       f"expected one of {', '.join(FAMOUS)}")
    if not layers or not isinstance(layers[0], Input):
        raise ValueError("a famous declaration must start with Input(shape)")
    return layers


def famous_input_shape(name) -> tuple:
    """The input image shape (H, W, C) a famous model is declared for."""
    return tuple(_layers(name)[0].shape)


def famous_rows(name) -> list[ParamRow]:
    """Per-layer output shapes and parameter counts with formulas (a name or a layer list)."""
    layers = _layers(name)
    return _walk(layers[1:], tuple(layers[0].shape), "")[0]


def famous_total(name) -> int:
    """Total trainable parameters, summed from the declaration."""
    return sum(row.count for row in famous_rows(name))
