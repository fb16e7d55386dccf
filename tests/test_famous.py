"""Famous architectures: totals computed from the declarations equal the published figures."""
import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import pytest

from scratch import zoo
from scratch.famous import (ALEXNET, FAMOUS, Concat, Conv, Dense, Flatten, Input, Pool,
                            famous_input_shape, famous_rows, famous_total)

ROOT = Path(__file__).resolve().parents[1]

# The papers' / references' figures, typed here only (see scratch/famous.py for sources).
PUBLISHED_TOTALS = {
    "lenet5": 60_840,            # sum of LeCun et al. 1998's per-layer counts below
    "alexnet": 60_965_224,       # two-GPU AlexNet, Caffe bvlc_alexnet layout
    "vgg16": 138_357_544,        # VGG-16 with the 3 FC layers, as Keras' VGG16 reports
    "inception_v4": 42_679_816,  # timm / keras-hub inception_v4
}
LENET5_PAPER_LAYERS = {"C1": 156, "S2": 12, "C3": 1_516, "S4": 32, "C5": 48_120,
                       "F6": 10_164, "output": 84 * 10}


def rows_by_label(name):
    return {row.layer: row for row in famous_rows(name)}


@pytest.mark.parametrize("name", sorted(PUBLISHED_TOTALS))
def test_total_equals_published_figure(name):
    assert famous_total(name) == PUBLISHED_TOTALS[name]


def test_every_famous_model_is_covered():
    assert set(FAMOUS) == set(PUBLISHED_TOTALS)


@pytest.mark.parametrize("name", sorted(PUBLISHED_TOTALS))
def test_each_row_count_matches_its_parameter_shapes_and_formula(name):
    for row in famous_rows(name):
        assert row.count == sum(math.prod(shape) for shape in row.shapes.values()), row.layer
        assert row.formula.endswith(f"= {row.count:,}") or row.count == 0, row.layer


def test_lenet5_layers_match_the_paper():
    rows = rows_by_label("lenet5")
    assert {label: rows[label].count for label in LENET5_PAPER_LAYERS} == LENET5_PAPER_LAYERS
    assert rows["C3"].formula == "5*5*(6*3 + 9*4 + 1*6) + 16 = 1,516"
    assert rows["C3"].output_shape == (10, 10, 16)
    assert rows["C5"].output_shape == (1, 1, 120)


def test_vgg16_layer_counts_and_shapes():
    rows = rows_by_label("vgg16")
    assert rows["conv1_1"].formula == "3*3*3*64 + 64 = 1,792"
    assert rows["conv5_3"].output_shape == (14, 14, 512)
    assert rows["pool5"].output_shape == (7, 7, 512)
    assert rows["fc6"].count == 102_764_544
    assert rows["fc8"].output_shape == (1000,)


def test_alexnet_grouped_convolutions_and_ungrouped_variant():
    rows = rows_by_label("alexnet")
    assert rows["conv1"].output_shape == (55, 55, 96)
    assert rows["conv2"].formula == "5*5*(96/2)*256 + 256 = 307,456"
    assert rows["pool5"].output_shape == (6, 6, 256)
    assert rows["fc6"].count == 37_752_832
    single_stream = [dataclasses.replace(layer, groups=1) if isinstance(layer, Conv) else layer
                     for layer in ALEXNET]
    assert sum(row.count for row in famous_rows(single_stream)) == 62_378_344


def test_inception_v4_shapes_at_block_boundaries():
    rows = rows_by_label("inception_v4")
    assert rows["stem_conv1"].output_shape == (149, 149, 32)
    assert rows["mixed_5a/concat"].output_shape == (35, 35, 384)
    assert rows["inception_a4/concat"].output_shape == (35, 35, 384)
    assert rows["reduction_a/concat"].output_shape == (17, 17, 1024)
    assert rows["inception_b7/concat"].output_shape == (17, 17, 1024)
    assert rows["inception_c3/concat"].output_shape == (8, 8, 1536)
    assert rows["logits"].formula == "1536*1000 + 1000 = 1,537,000"


def test_inception_v4_conv_counts_batchnorm_gamma_beta_without_bias():
    row = rows_by_label("inception_v4")["inception_b1/b1/conv1x7_1"]
    assert row.output_shape == (17, 17, 224)
    assert row.formula == "1*7*192*224 + 2*224 (BN) = 301,504"
    assert set(row.shapes) == {"kernel", "gamma", "beta"}


def test_input_shapes():
    assert famous_input_shape("lenet5") == (32, 32, 1)
    assert famous_input_shape("alexnet") == (227, 227, 3)
    assert famous_input_shape("vgg16") == (224, 224, 3)
    assert famous_input_shape("inception_v4") == (299, 299, 3)


def test_modern_lenet5_simplification_from_the_same_building_blocks():
    # Full C3, max pooling, a dense 10-way output: the 61,706 usually quoted for "LeNet-5" in Keras.
    layers = [Input((32, 32, 1)), Conv(6, 5), Pool(), Conv(16, 5), Pool(), Conv(120, 5),
              Flatten(), Dense(84), Dense(10)]
    assert sum(row.count for row in famous_rows(layers)) == 61_706


def test_layers_the_zoo_expresses_are_counted_as_the_zoo_counts_them():
    """tiny declared with famous's building blocks: every row but the label is zoo's."""
    layers = [Input((28, 28, 1)), Conv(8, 5), Pool(), Conv(3, 5), Pool(), Flatten(), Dense(16),
              Dense(10)]
    ours = [(r.output_shape, r.formula, r.count, r.shapes) for r in famous_rows(layers)]
    zoos = [(r.output_shape, r.formula, r.count, r.shapes) for r in zoo.param_rows("tiny")]
    assert ours == zoos


def test_bad_declarations_raise_clear_errors():
    with pytest.raises(KeyError, match="unknown famous model 'resnet50'"):
        famous_rows("resnet50")
    with pytest.raises(ValueError, match="must start with Input"):
        famous_rows([Conv(8)])
    with pytest.raises(ValueError, match="dense needs a flat input"):
        famous_rows([Input((8, 8, 1)), Dense(4)])
    with pytest.raises(ValueError, match="differ in height/width"):
        famous_rows([Input((9, 9, 4)), Concat("bad", ([Conv(4, 3)], [Conv(4, 3, padding="same")]))])
    with pytest.raises(ValueError, match="divide by groups=2"):
        famous_rows([Input((9, 9, 3)), Conv(4, 3, groups=2)])
    with pytest.raises(ValueError, match=r"conv2d: the window is larger than its \(padded\) input"):
        famous_rows([Input((2, 2, 1)), Conv(4, 3)])


def test_famous_stays_pure_numpy():
    code = ("import sys, scratch.famous; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
