"""A script whose `fit` meets a bad sample and lets the error go uncaught ends.

The uncaught error's traceback (kept in `sys.last_*`) holds the tf.data
iterator. Freed during interpreter shutdown, TensorFlow waited for in-flight
sample loads that need the GIL it held: about one run in two hung forever
(TensorFlow backend). `COCOPanopticDataset.as_dataset` frees it at exit.
"""

import os

from keras_maxdeeplab.data import write_synthetic_panoptic_dataset
from tests.helpers import run_python

SCRIPT = """
import sys
from keras_maxdeeplab import build_model
from keras_maxdeeplab.data import COCOPanopticDataset
from tests.helpers import ONE_BLOCK_PER_STAGE
data = COCOPanopticDataset(*sys.argv[1:4])
# One block per stage: the hang was the data pipeline's, not the model's.
model = build_model("max_deeplab_tiny", 65, {"categories": data.categories, **ONE_BLOCK_PER_STAGE})
model.compile(learning_rate=1e-3, training_steps=10, warmup_steps=0)
model.fit(data.as_dataset(model=model, batch_size=2, seed=0), steps_per_epoch=3, verbose=0)
"""


def test_an_uncaught_dataset_error_ends_the_process(tmp_path):
    paths = write_synthetic_panoptic_dataset(str(tmp_path), 4, seed=0)
    missing = os.path.join(paths[0], sorted(os.listdir(paths[0]))[1])
    os.remove(missing)
    code, _, err = run_python(SCRIPT, *paths, timeout=600)
    assert code == 1, err[-3000:]
    assert f"DatasetError: {missing}: file not found." in err
