"""Every public layer: config round trip, same outputs, eager == compiled."""

import numpy as np
import pytest

from keras_maxdeeplab import layers
from keras_maxdeeplab.layers.heads import L2Normalize
from tests.helpers import run_layer_test

RNG = np.random.RandomState(0)


def _x(*shape):
    return RNG.normal(size=shape).astype("float32")


CASES = {
    "Conv2DSame": lambda: (layers.Conv2DSame(4, 3, strides=2, activation="relu"), _x(2, 9, 9, 3)),
    "Conv2DSame_atrous": lambda: (
        layers.Conv2DSame(4, 3, atrous_rate=2, use_bn=False),
        _x(2, 9, 9, 3),
    ),
    "SeparableConv2DSame": lambda: (layers.SeparableConv2DSame(4, 5), _x(2, 9, 9, 3)),
    "Conv1D": lambda: (layers.Conv1D(6, activation="relu"), _x(2, 5, 3)),
    "DropPath": lambda: (layers.DropPath(0.8, seed=3), _x(2, 4, 4, 3)),
    "InceptionStem": lambda: (layers.InceptionStem(0.125), _x(2, 17, 17, 3)),
    "BlockGroup": lambda: (
        layers.BlockGroup(8, 2, 2, 8, use_transformer_beyond_stride=0),
        _x(2, 9, 9, 8),
    ),
    "ResizedFuse": lambda: (
        layers.ResizedFuse(9, 9, 8),
        [[_x(2, 5, 5, 16), _x(2, 9, 9, 8), _x(2, 17, 17, 4)]],
    ),
    "ASPP": lambda: (layers.ASPP(8, (1, 2, 3)), _x(2, 5, 5, 6)),
    "SemanticDecoder": lambda: (
        layers.SemanticDecoder(8, 8, (4, 2)),
        [[_x(2, 3, 3, 6), _x(2, 5, 5, 4), _x(2, 9, 9, 3)]],
    ),
    "PredictionHead": lambda: (layers.PredictionHead(8, 5), _x(2, 9, 9, 6)),
    "TransformerClassHead": lambda: (layers.TransformerClassHead(7), _x(2, 4, 6)),
    "MaskLogits": lambda: (layers.MaskLogits(), [_x(2, 5, 5, 6), _x(2, 4, 6)]),
    "L2Normalize": lambda: (L2Normalize(), _x(2, 5, 5, 6)),
    "MemoryFeature": lambda: (layers.MemoryFeature(4, 6), _x(2, 5, 5, 3)),
    "AttentionOperation": lambda: (
        layers.AttentionOperation(),
        [[_x(2, 2, 3, 4), _x(2, 2, 5, 4), _x(2, 5, 2, 3)]],
    ),
    "AttentionOperation_gelu": lambda: (
        layers.AttentionOperation(activation="gelu"),
        [[_x(2, 2, 3, 4), _x(2, 2, 5, 4), _x(2, 5, 2, 3)]],
    ),
    "SemanticDecoder_gelu": lambda: (
        layers.SemanticDecoder(8, 8, (4, 2), activation="gelu"),
        [[_x(2, 3, 3, 6), _x(2, 5, 5, 4), _x(2, 9, 9, 3)]],
    ),
    "MaskPredictor": lambda: (
        layers.MaskPredictor(8, 4, 7, activation="gelu"),
        [_x(2, 5, 5, 6), _x(2, 3, 6), _x(2, 3, 6)],
    ),
    "KMaXPixelDecoder": lambda: (
        layers.KMaXPixelDecoder((8, 8, 2, 1), (1, 1, 1, 1)),
        [[_x(2, 3, 3, 16), _x(2, 5, 5, 8), _x(2, 9, 9, 4), _x(2, 17, 17, 2)]],
    ),
    "ConvNeXtDownsampling_stem": lambda: (
        layers.ConvNeXtDownsampling(4, stem=True),
        _x(2, 9, 9, 3),
    ),
    "ConvNeXtDownsampling": lambda: (layers.ConvNeXtDownsampling(6), _x(2, 5, 5, 4)),
    "ConvNeXtBlock": lambda: (layers.ConvNeXtBlock(4, 0.8), _x(2, 9, 9, 4)),
    "KMeansTransformerBlock": lambda: (
        layers.KMeansTransformerBlock(8, 4, 8, 4, 7),
        [_x(2, 5, 5, 6), _x(2, 3, 12)],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer_round_trip(name):
    layer, inputs = CASES[name]()
    run_layer_test(layer, inputs, atol=1e-5)
