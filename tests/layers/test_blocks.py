import numpy as np
import pytest

from keras_maxdeeplab.layers import AxialBlock
from keras_maxdeeplab.layers import BlockGroup
from keras_maxdeeplab.layers import Conv2DSame
from tests.helpers import run_layer_test
from tests.helpers import to_numpy


def _plan(**kwargs):
    return BlockGroup(name="group", **kwargs).block_plan()


def test_max_deeplab_s_stage_plans():
    stage4 = _plan(
        filters=256, num_blocks=6, original_resnet_stride=2, original_resnet_input_stride=8
    )
    assert stage4[0]["attention_type"] is None and stage4[0]["strides"] == 2
    assert stage4[0]["filters"] == [256, 256, 1024]
    assert [p["attention_type"] for p in stage4[1:]] == ["axial"] * 5
    assert stage4[1]["filters"] == [512, 256, 1024]
    assert [p["keep_prob"] for p in stage4] == pytest.approx([1.0] + [0.85] * 5)
    assert not any(p["transformer"] for p in stage4)
    stage5 = _plan(
        filters=512, num_blocks=3, original_resnet_stride=2, original_resnet_input_stride=16
    )
    assert [p["strides"] for p in stage5] == [1, 1, 1]  # output stride 16: no striding
    assert [p["keep_prob"] for p in stage5] == pytest.approx([0.85, 0.8, 0.8])
    assert all(p["transformer"] for p in stage5)
    assert [p["atrous_rate"] for p in stage5] == [1, 2, 2]


def test_max_deeplab_l_stage_plans():
    common = dict(
        backbone_type="wider_resnet",
        drop_path_beyond_stride=4,
        use_transformer_beyond_stride=16,
        attention_bottleneck_expansion=4,
    )
    stage1 = _plan(
        filters=32, num_blocks=3, original_resnet_stride=1, original_resnet_input_stride=2, **common
    )
    assert [p["filters"] for p in stage1] == [[128, 128]] * 3
    stage4 = _plan(
        filters=256,
        num_blocks=3,
        original_resnet_stride=2,
        original_resnet_input_stride=8,
        **common,
    )
    assert stage4[0]["filters"] == [1024, 1024] and stage4[0]["strides"] == 2
    assert stage4[1]["filters"] == [1024, 256, 1024]
    assert [p["keep_prob"] for p in stage4] == pytest.approx([0.9, 0.85, 0.85])
    assert all(p["transformer"] for p in stage4)


def test_conv2d_same_strided_padding_is_symmetric():
    # A 1x1 stride-2 conv samples pixels 0, 2, 4 (Keras 'same' would sample 1, 3).
    layer = Conv2DSame(1, 1, strides=2, use_bn=False, kernel_initializer="ones")
    x = np.arange(25, dtype="float32").reshape(1, 5, 5, 1)
    y = to_numpy(layer(x))[0, :, :, 0]
    np.testing.assert_array_equal(y, x[0, ::2, ::2, 0])
    three = Conv2DSame(1, 3, strides=2, use_bn=False, kernel_initializer="ones")
    assert tuple(three(np.zeros((1, 65, 65, 1), "float32")).shape) == (1, 33, 33, 1)


def test_axial_block_round_trip():
    rng = np.random.RandomState(0)
    x = rng.normal(size=(1, 5, 5, 16)).astype("float32")
    block = AxialBlock([16, 8, 32], attention_type="axial", num_heads=2)
    block(x)
    for variable in block.weights:
        if variable.path.endswith("gamma"):
            variable.assign(rng.uniform(0.5, 1.5, size=variable.shape).astype("float32"))
    run_layer_test(block, x, atol=1e-5)


def test_bad_filters():
    with pytest.raises(ValueError, match="2 or 3"):
        AxialBlock([4])
