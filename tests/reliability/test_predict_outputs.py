"""Issue items on `maxdeeplab predict`: colliding output names, stale files,
a JSON rewritten in place (truncated on a full disk), every result kept in
memory and nothing written when interrupted, one bad image losing the run,
and image ids that did not match the dataset's."""

import json
import os
import signal
import time

import numpy as np
from PIL import Image

from keras_maxdeeplab.cli import main
from keras_maxdeeplab.coco import rgb2id
from keras_maxdeeplab.prediction_writer import write_predictions
from tests.helpers import python_child
from tests.helpers import shared_path
from tests.test_prediction_writer import HalfSkyModel

# A prediction run in a child process: a slow model, the JSON rewritten after every image.
SLOW_RUN = """
import sys, time
import numpy as np
from keras_maxdeeplab.prediction_writer import write_predictions
from tests.test_prediction_writer import HalfSkyModel

class Slow(HalfSkyModel):
    def predict_panoptic(self, image):
        time.sleep(0.3)
        return super().predict_panoptic(image)

images = [(f"{i:02d}.jpg", np.zeros((8 + i, 8, 3), np.uint8)) for i in range(40)]
write_predictions(Slow(), images, sys.argv[1], overlays=False, json_every=1)
"""

# Rewrites panoptic.json under a small file-size limit (a full disk, as the process sees it).
FULL_DISK = """
import resource, signal, sys
import numpy as np
from keras_maxdeeplab.coco import CocoPanopticWriter
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # exceeding the limit: an OSError, not a kill
writer = CocoPanopticWriter(sys.argv[1], [{"id": 4, "name": "sky", "isthing": 0}])
result = {"segmentation": np.ones((4, 4), np.int32),
          "segments_info": [{"id": 1, "category_id": 4}]}
resource.setrlimit(resource.RLIMIT_FSIZE, (600, 600))
try:
    for i in range(40):
        writer.add(result, f"image_{i:02d}.jpg")
    writer.write_json()
except OSError as error:
    print("refused:", error.errno)
"""


def _check_consistent(folder):
    """panoptic.json is valid and each image it lists has its whole PNG."""
    with open(os.path.join(folder, "panoptic.json")) as f:
        data = json.load(f)
    for image, annotation in zip(data["images"], data["annotations"]):
        ids = rgb2id(np.asarray(Image.open(os.path.join(folder, "panoptic", annotation["file_name"]))))
        assert ids.shape == (image["height"], image["width"])
    return data


def test_a_killed_run_keeps_what_it_had_done(tmp_path):
    output = str(tmp_path / "out")
    child = python_child(SLOW_RUN, output)
    json_path = os.path.join(output, "panoptic.json")
    deadline = time.time() + 120
    while time.time() < deadline:
        if os.path.exists(json_path) and len(json.load(open(json_path))["images"]) >= 3:
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    data = _check_consistent(output)
    assert 3 <= len(data["images"]) < 40
    assert [i["file_name"] for i in data["images"]] == [f"{i:02d}.jpg" for i in range(len(data["images"]))]


def test_a_full_disk_leaves_the_old_json_whole(tmp_path):
    output = str(tmp_path / "out")
    write_predictions(HalfSkyModel(), [("old.jpg", np.zeros((4, 4, 3), np.uint8))], output)
    before = open(os.path.join(output, "panoptic.json")).read()
    child = python_child(FULL_DISK, output)
    out, err = child.communicate(timeout=120)
    assert "refused: 27" in out, err[-2000:]  # EFBIG
    assert open(os.path.join(output, "panoptic.json")).read() == before
    _check_consistent(output)
    assert not [n for n in os.listdir(output) if n.startswith(".panoptic.json")]


def _photos(folder, names, sizes):
    for name, size in zip(names, sizes):
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(np.full(size + (3,), 90, np.uint8)).save(path)


def test_colliding_names_stale_outputs_and_bad_images(tmp_path, monkeypatch, capsys):
    from keras_maxdeeplab import MaXDeepLab

    monkeypatch.setattr(MaXDeepLab, "from_preset", classmethod(lambda cls, preset: HalfSkyModel()))
    photos = str(tmp_path / "photos")
    _photos(photos, ["x/a.jpg", "y/a.jpg", "x/b.jpg", "x/b.png"], [(6, 4), (8, 4), (10, 4), (12, 4)])
    output = str(tmp_path / "out")
    args = ["predict", os.path.join(photos, "x"), os.path.join(photos, "y"), "--output", output]
    assert main(args) == 0, capsys.readouterr().err
    data = _check_consistent(output)
    sizes = {i["file_name"]: i["height"] for i in data["images"]}
    assert sizes == {"x/a.jpg": 6, "x/b.jpg": 10, "x/b.png": 12, "y/a.jpg": 8}
    assert len({a["file_name"] for a in data["annotations"]}) == 4

    # A second run into the same folder: refused, then replaced with --overwrite.
    assert main(args) == 1
    assert "already holds predictions" in capsys.readouterr().err
    (tmp_path / "photos" / "x" / "b.png").unlink()
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "photos" / "y" / "c.jpg")
    with open(tmp_path / "photos" / "x" / "broken.jpg", "wb") as f:
        f.write(b"not a jpeg")
    assert main(args + ["--overwrite"]) == 1
    error = capsys.readouterr().err
    assert "Stopped at x/broken.jpg after 2 images" in error and "\n" not in error.strip()
    assert sorted(i["file_name"] for i in _check_consistent(output)["images"]) == ["x/a.jpg", "x/b.jpg"]
    assert "b_png.png" not in os.listdir(os.path.join(output, "panoptic"))  # stale PNG gone

    assert main(args + ["--overwrite", "--skip-errors"]) == 0
    out = capsys.readouterr().out
    assert "Skipped x/broken.jpg: Cannot read image" in out and "Wrote 4 predictions" in out
    assert len(_check_consistent(output)["images"]) == 4


def test_predictions_carry_the_dataset_image_ids(tmp_path, capsys):
    from keras_maxdeeplab.conversion import convert_checkpoint

    preset = str(tmp_path / "coco_tiny")  # deeplab2's tiny model: COCO categories
    checkpoint = shared_path("reference", "max_deeplab_tiny", "ckpt")
    convert_checkpoint(checkpoint, preset, config="max_deeplab_tiny", crop_size=65)
    folder = shared_path("data", "coco_panoptic_sample")
    annotations = os.path.join(folder, "panoptic_examples.json")
    output = str(tmp_path / "out")
    code = main(
        [
            "predict",
            os.path.join(folder, "input_images"),
            "--preset",
            preset,
            "--annotations",
            annotations,
            "--output",
            output,
            "--no-overlays",
        ]
    )
    assert code == 0, capsys.readouterr().err
    listed = {i["file_name"]: i["id"] for i in json.load(open(annotations))["images"]}
    written = json.load(open(os.path.join(output, "panoptic.json")))
    assert {i["file_name"]: i["id"] for i in written["images"]} == listed
    # ... so that evaluate pairs each prediction with its ground truth.
    code = main(
        [
            "evaluate",
            "--annotations",
            annotations,
            "--panoptic",
            os.path.join(folder, "panoptic_examples"),
            "--predictions",
            os.path.join(output, "panoptic.json"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "All " in capsys.readouterr().out
