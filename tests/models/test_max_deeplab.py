import h5py
import numpy as np
import pytest

from keras_maxdeeplab import MaXDeepLab
from keras_maxdeeplab import MaXDeepLabBackbone
from keras_maxdeeplab import MaXDeepLabImageConverter
from keras_maxdeeplab import build_model
from keras_maxdeeplab.layers.heads import void_prior_logit
from keras_maxdeeplab.postprocessing import post_process_panoptic_segmentation
from tests.helpers import TINY_BACKBONE
from tests.helpers import TINY_HEADS
from tests.helpers import run_backbone_test
from tests.helpers import run_task_test
from tests.helpers import tiny_model
from tests.helpers import to_numpy


@pytest.fixture(scope="module")
def model():
    return tiny_model(65)


@pytest.fixture(scope="module")
def images():
    return np.random.RandomState(0).uniform(-1, 1, (2, 65, 65, 3)).astype("float32")


def test_outputs(model, images):
    outputs = to_numpy(model(images))
    assert {k: v.shape for k, v in outputs.items()} == {
        "semantic_logits": (2, 17, 17, 134),
        "pixel_space_normalized_feature": (2, 17, 17, 16),
        "transformer_class_logits": (2, 32, 134),
        "pixel_space_mask_logits": (2, 17, 17, 32),
    }
    norms = np.linalg.norm(outputs["pixel_space_normalized_feature"], axis=-1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    # Untrained class head: near-zero logits plus the constant void prior ln(1197).
    assert void_prior_logit(134) == pytest.approx(np.log(1197.0))
    np.testing.assert_allclose(
        outputs["transformer_class_logits"][..., -1], void_prior_logit(134), atol=0.5
    )


def test_task_checks(model, images, tmp_path):
    run_task_test(model, images, tmp_path)


def test_backbone_checks(model, images):
    run_backbone_test(model.backbone, images)


def test_bad_inputs(model):
    with pytest.raises(ValueError, match="rank 4"):
        model(np.zeros((65, 65, 3), "float32"))
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        model(np.zeros((1, 65, 65, 1), "float32"))
    with pytest.raises(ValueError, match="built for 65x65"):
        model(np.zeros((1, 64, 64, 3), "float32"))
    with pytest.raises(ValueError, match="float images"):
        model(np.zeros((1, 65, 65, 3), "uint8"))


CUSTOM_CATEGORIES = [
    {"id": 10, "name": "road", "isthing": 0},
    {"id": 5, "name": "robot", "isthing": 1},
    {"id": 3, "name": "wall", "isthing": 0},
]


def _custom_model(**kwargs):
    backbone = MaXDeepLabBackbone(image_shape=(65, 65, 3), **TINY_BACKBONE)
    return MaXDeepLab(backbone, categories=CUSTOM_CATEGORIES, **TINY_HEADS, **kwargs)


def test_categories_define_the_classes():
    model = _custom_model(postprocess_options={"thing_area_limit": 7})
    # Contiguous classes by id: 1 wall, 2 robot, 3 road; + void.
    assert model.num_classes == 4 and model.thing_class_ids == (2,)
    assert [c["name"] for c in model.categories] == ["wall", "robot", "road"]
    assert model.max_deeplab_loss.thing_class_ids == (2,)
    assert model.postprocess_options["thing_area_limit"] == 7
    assert model.postprocess_options["stuff_area_limit"] == 1600
    assert model.output["transformer_class_logits"].shape[-1] == 4
    clone = MaXDeepLab.from_config(model.get_config())
    assert clone.categories == model.categories
    assert clone.postprocess_options == model.postprocess_options
    metric = model.panoptic_quality()
    assert metric.num_classes == 4 and metric.thing_class_ids == (2,)


def test_category_errors():
    backbone = MaXDeepLabBackbone(image_shape=(65, 65, 3), **TINY_BACKBONE)
    with pytest.raises(ValueError, match="num_classes=134 does not match 3 categories"):
        MaXDeepLab(backbone, categories=CUSTOM_CATEGORIES, num_classes=134, **TINY_HEADS)
    with pytest.raises(ValueError, match="num_classes=5 does not match 133 categories"):
        MaXDeepLab(backbone, **dict(TINY_HEADS, num_classes=5))
    with pytest.raises(ValueError, match="Unknown postprocess_options \\['area'\\]"):
        _custom_model(postprocess_options={"area": 1})


def test_predict_panoptic_returns_segments_at_each_image_size():
    model = _custom_model(
        postprocess_options={
            "transformer_class_confidence_threshold": 0.0,
            "pixel_confidence_threshold": 0.0,
            "thing_area_limit": 0,
            "stuff_area_limit": 0,
        }
    )
    rng = np.random.RandomState(1)
    images = [rng.randint(0, 256, (40, 90, 3)).astype("uint8"), rng.randint(0, 256, (65, 30, 3))]
    results = model.predict_panoptic(images, batch_size=1)
    converter = MaXDeepLabImageConverter(image_size=(65, 65))
    for image, result in zip(images, results):
        outputs = model.predict(np.asarray(converter(image))[None], verbose=0)
        expected = post_process_panoptic_segmentation(
            outputs, [image.shape[:2]], CUSTOM_CATEGORIES, converter, **model.postprocess_options
        )[0]
        assert result["segmentation"].shape == image.shape[:2]
        np.testing.assert_array_equal(result["segmentation"], expected["segmentation"])
        assert result["segments_info"] == expected["segments_info"]
        assert result["segments_info"], "zero thresholds keep every slot's pixels"
        for segment in result["segments_info"]:
            assert segment["category_id"] in (3, 5, 10)
            assert segment["isthing"] == (segment["category_id"] == 5)
            assert segment["area"] == (result["segmentation"] == segment["id"]).sum()


def test_predict_panoptic_pipelines_are_cached_and_not_saved(tmp_path):
    """One compiled network + post-processor per set of options, outside
    what Keras saves: the weights file has the same entries afterwards."""
    model = _custom_model()
    image = np.random.RandomState(2).randint(0, 256, (50, 60, 3)).astype("uint8")
    before = str(tmp_path / "before.weights.h5")
    model.save_weights(before)
    model.predict_panoptic(image)
    model.predict_panoptic(image, thing_area_limit=3)
    model.predict_panoptic(image)
    assert len(model._panoptic_pipelines.by_options) == 2
    # Every layer built from the start (drop paths, the preprocessor), in
    # the pipeline and in the task itself: otherwise Keras' JAX
    # predict_on_batch re-runs the whole model eagerly on every call.
    task = build_model("max_deeplab_tiny", 65)
    for graph in (task, task._panoptic_pipeline({})):
        assert [layer.name for layer in graph._flatten_layers() if not layer.built] == []
    after = str(tmp_path / "after.weights.h5")
    model.save_weights(after)
    names = {}
    for path in (before, after):
        with h5py.File(path) as f:
            names[path] = []
            f.visit(names[path].append)
    assert names[after] == names[before]
    with pytest.raises(ValueError, match="Unknown postprocess options \\['area'\\]"):
        model.predict_panoptic(image, area=1)
