import json
import os

import numpy as np
import pytest
from PIL import Image

from keras_maxdeeplab.data.synthetic import SYNTHETIC_CATEGORIES
from keras_maxdeeplab.data.synthetic import _polygon_mask
from keras_maxdeeplab.data.synthetic import synthetic_scene
from keras_maxdeeplab.data.synthetic import write_synthetic_panoptic_dataset
from keras_maxdeeplab.evaluation import pq_compute
from keras_maxdeeplab.evaluation import read_coco_panoptic
from keras_maxdeeplab.evaluation import rgb2id

CATEGORIES = {c["id"]: c for c in SYNTHETIC_CATEGORIES}
OPTIONS = {"default": {}, "crowd_and_void": {"crowd_regions": 2, "void_regions": 1}}


@pytest.fixture(scope="module", params=sorted(OPTIONS))
def dataset(request, tmp_path_factory):
    """(paths, panoptic JSON, scene options) of a 12-image dataset."""
    options = OPTIONS[request.param]
    paths = write_synthetic_panoptic_dataset(
        tmp_path_factory.mktemp(request.param), 12, seed=3, **options
    )
    with open(paths.panoptic_json) as f:
        return paths, json.load(f), options


def read_png(folder, file_name):
    with Image.open(os.path.join(folder, file_name)) as image:
        return np.asarray(image)


def folder_bytes(root):
    contents = {}
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                contents[os.path.relpath(os.path.join(folder, name), root)] = f.read()
    return contents


def test_json_layout(dataset):
    paths, data, _ = dataset
    assert sorted(data) == ["annotations", "categories", "images"]
    assert data["categories"] == SYNTHETIC_CATEGORIES
    assert [image["id"] for image in data["images"]] == list(range(12))
    for image, annotation in zip(data["images"], data["annotations"]):
        assert annotation["image_id"] == image["id"]
        assert (image["height"], image["width"]) == (128, 128)
        picture = read_png(paths.images_dir, image["file_name"])
        assert picture.shape == (128, 128, 3) and picture.dtype == np.uint8


def test_json_segments_match_the_png(dataset):
    paths, data, options = dataset
    for annotation in data["annotations"]:
        ids = rgb2id(read_png(paths.panoptic_dir, annotation["file_name"]))
        segments = annotation["segments_info"]
        assert len({s["id"] for s in segments}) == len(segments)
        assert {s["id"] for s in segments} == set(np.unique(ids).tolist()) - {0}
        assert (0 in ids) == bool(options.get("void_regions"))
        for segment in segments:
            rows, columns = np.nonzero(ids == segment["id"])
            x, y = columns.min(), rows.min()
            assert segment["area"] == rows.size
            assert segment["bbox"] == [x, y, columns.max() - x + 1, rows.max() - y + 1]
            assert segment["category_id"] in CATEGORIES
        crowd_categories = [s["category_id"] for s in segments if s["iscrowd"]]
        assert len(crowd_categories) == len(set(crowd_categories)), "one crowd per category"
        assert all(CATEGORIES[c]["isthing"] for c in crowd_categories)


def test_segment_contents(dataset):
    _, data, options = dataset
    segments = [s for a in data["annotations"] for s in a["segments_info"]]
    # Every segment keeps a real visible area; things and stuff in every image.
    assert min(s["area"] for s in segments) >= 64
    for annotation in data["annotations"]:
        categories = [CATEGORIES[s["category_id"]] for s in annotation["segments_info"]]
        stuff = [c["id"] for c in categories if not c["isthing"]]
        assert len(stuff) in (2, 3) and len(set(stuff)) == len(stuff), stuff
        instances = [
            s
            for s in annotation["segments_info"]
            if CATEGORIES[s["category_id"]]["isthing"] and not s["iscrowd"]
        ]
        assert 1 <= len(instances) <= 5  # max_things
    crowds = sum(s["iscrowd"] for s in segments)
    assert crowds > 0 if options.get("crowd_regions") else crowds == 0
    assert {s["category_id"] for s in segments} == set(CATEGORIES)


def test_minimum_area_is_kept():
    for seed in range(30):
        _, ids, segments = synthetic_scene(seed, min_area=300, crowd_regions=1, void_regions=1)
        assert min(s["area"] for s in segments) >= 300
        assert np.sum(ids == 0) == 0 or np.sum(ids == 0) >= 300


def test_colours_are_in_the_category_family(dataset):
    paths, data, _ = dataset
    colors = np.array([c["color"] for c in SYNTHETIC_CATEGORIES], np.float64)
    category_ids = [c["id"] for c in SYNTHETIC_CATEGORIES]
    for annotation in data["annotations"]:
        image = read_png(paths.images_dir, annotation["file_name"]).astype(np.float64)
        ids = rgb2id(read_png(paths.panoptic_dir, annotation["file_name"]))
        for segment in annotation["segments_info"]:
            mean = image[ids == segment["id"]].mean(0)
            category = CATEGORIES[segment["category_id"]]
            if not category["isthing"]:
                assert np.abs(mean - category["color"]).max() < 25
            # The mean colour alone tells the category of every segment.
            nearest = category_ids[int(np.argmin(np.linalg.norm(colors - mean, axis=1)))]
            assert nearest == segment["category_id"]


def test_official_evaluators_score_ground_truth_against_itself_one(dataset):
    paths, _, _ = dataset
    gt_json, gt_folder = str(paths.panoptic_json), str(paths.panoptic_dir)
    results = pq_compute(gt_json, gt_json, gt_folder, gt_folder)
    assert results["All"]["pq"] == 1.0 and results["All"]["n"] == len(CATEGORIES)
    assert results["Things"]["n"] == 4 and results["Stuff"]["n"] == 4
    panopticapi = pytest.importorskip("panopticapi.evaluation")
    official = panopticapi.pq_compute(gt_json, gt_json, gt_folder, gt_folder)
    assert official["All"]["pq"] == 1.0 and official["All"]["n"] == len(CATEGORIES)


def test_reader_gives_the_generated_scenes(dataset):
    paths, data, options = dataset
    annotations = list(read_coco_panoptic(str(paths.panoptic_json), str(paths.panoptic_dir)))
    assert [a["image_id"] for a, _ in annotations] == list(range(12))
    for annotation, ids in annotations:
        index = annotation["image_id"]
        image, expected_ids, segments = synthetic_scene(
            np.random.default_rng([3, index]), **options
        )
        np.testing.assert_array_equal(ids, expected_ids)
        np.testing.assert_array_equal(read_png(paths.images_dir, annotation["file_name"]), image)
        assert annotation["segments_info"] == segments


def test_same_seed_same_bytes_other_seed_other_scenes(tmp_path):
    first = write_synthetic_panoptic_dataset(tmp_path / "a", 4, seed=7)
    write_synthetic_panoptic_dataset(tmp_path / "b", 4, seed=7)
    write_synthetic_panoptic_dataset(tmp_path / "c", 4, seed=8)
    a, b, c = (folder_bytes(tmp_path / name) for name in "abc")
    assert len(a) == 9 and a == b
    assert first.panoptic_json == str(tmp_path / "a" / "panoptic.json")
    differing = [name for name in a if a[name] != c[name]]
    assert len(differing) == 9


def test_image_does_not_depend_on_the_dataset_size(tmp_path):
    small = write_synthetic_panoptic_dataset(tmp_path / "small", 2, image_size=(64, 96), seed=5)
    large = write_synthetic_panoptic_dataset(tmp_path / "large", 5, image_size=(64, 96), seed=5)
    small_files, large_files = folder_bytes(tmp_path / "small"), folder_bytes(tmp_path / "large")
    for name in ("000000.png", "000001.png"):
        for folder in ("images", "panoptic"):
            key = os.path.join(folder, name)
            assert small_files[key] == large_files[key]
    with open(small.panoptic_json) as f, open(large.panoptic_json) as g:
        small_json, large_json = json.load(f), json.load(g)
    assert small_json["annotations"] == large_json["annotations"][:2]
    assert large_json["images"][4] == {
        "id": 4,
        "file_name": "000004.png",
        "height": 64,
        "width": 96,
    }


def test_scene_from_generator_or_seed():
    image, ids, segments = synthetic_scene(11, image_size=(80, 144), max_things=8)
    same = synthetic_scene(np.random.default_rng(11), image_size=(80, 144), max_things=8)
    assert image.shape == (80, 144, 3) and image.dtype == np.uint8
    assert ids.shape == (80, 144) and ids.dtype == np.int64
    np.testing.assert_array_equal(same[0], image)
    np.testing.assert_array_equal(same[1], ids)
    assert same[2] == segments
    assert not np.array_equal(synthetic_scene(12, image_size=(80, 144))[1], ids)
    # Stuff segments first, with their category colour as id.
    stuff = CATEGORIES[segments[0]["category_id"]]
    assert stuff["isthing"] == 0
    assert segments[0]["id"] == rgb2id(np.array([[stuff["color"]]]))[0, 0]


def test_max_things_bounds_the_instances():
    for seed in range(20):
        _, _, segments = synthetic_scene(seed, max_things=2)
        things = [s for s in segments if CATEGORIES[s["category_id"]]["isthing"]]
        assert 1 <= len(things) <= 2


def test_polygon_mask_area_matches_the_shoelace_formula():
    ys, xs = np.mgrid[0:200, 0:200] + 0.5
    vertex_ys, vertex_xs = np.array([20.0, 180.0, 150.0]), np.array([30.0, 60.0, 170.0])
    area = 0.5 * abs(
        np.dot(vertex_xs, np.roll(vertex_ys, 1)) - np.dot(vertex_ys, np.roll(vertex_xs, 1))
    )
    mask = _polygon_mask(vertex_ys, vertex_xs, ys, xs)
    assert abs(mask.sum() - area) < 0.01 * area
    assert mask[100, 100] and not mask[10, 10] and not mask[190, 190]


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"num_images": 0}, "num_images must be an integer >= 1"),
        ({"image_size": (16, 128)}, "image_size must be"),
        ({"image_size": (128,)}, "image_size must be"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"colour": "red"}, "Unknown scene options \\['colour'\\]"),
        ({"max_things": 0}, "max_things must be an integer >= 1"),
        ({"crowd_regions": -1}, "crowd_regions must be an integer in 0..4"),
        ({"crowd_regions": 5}, "crowd_regions must be an integer in 0..4"),
        ({"min_area": 5000}, "min_area 5000 exceeds"),
    ],
)
def test_bad_arguments(tmp_path, arguments, message):
    arguments = {"num_images": 1, **arguments}
    with pytest.raises(ValueError, match=message):
        write_synthetic_panoptic_dataset(tmp_path, **arguments)
