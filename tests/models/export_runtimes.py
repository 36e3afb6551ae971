"""Clients of exported artifacts, for the tests and the export benchmark.

The loaders use the artifact's own runtime alone (no Keras, no
keras_maxdeeplab), as a client does: each returns a function from an
`[B, H, W, 3]` image batch to `{output name: numpy array}`. `readme_client`
runs the README's NumPy pre/post-processing; `artifact_panoptic_quality`
scores an artifact with the package's PQ code.
"""

import os

import numpy as np


def load_saved_model(path):
    import tensorflow as tf

    serve = tf.saved_model.load(path).signatures["serving_default"]
    return lambda images: {k: v.numpy() for k, v in serve(images=tf.constant(images)).items()}


def load_onnx(path):
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return lambda images: dict(zip(names, session.run(names, {"images": images})))


def load_openvino(path):
    import openvino

    # float32 inference: OpenVINO's CPU plugin otherwise runs in bfloat16 on
    # CPUs that have it (AMX, AVX512_BF16), which moves segments.
    compiled = openvino.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

    def run(images):
        result = compiled(images)
        return {output.get_any_name(): np.asarray(result[output]) for output in compiled.outputs}

    return run


def load_litert(path):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=path).get_signature_runner()
    return lambda images: {k: np.asarray(v) for k, v in runner(images=images).items()}


def load_torch_export(path):
    import torch

    module = torch.export.load(path).module()

    def run(images):
        with torch.no_grad():
            outputs = module(torch.from_numpy(images))
        return {k: v.numpy() for k, v in outputs.items()}

    return run


RUNTIMES = {
    "tf_saved_model": load_saved_model,
    "onnx": load_onnx,
    "openvino": load_openvino,
    "litert": load_litert,
    "torch": load_torch_export,
}


README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "README.md")


def readme_client():
    """The README's NumPy client (`preprocess`, `restore`, ...): its Python
    block starting `# serving_client.py`, run as it stands."""
    with open(README) as f:
        text = f.read()
    start = text.index("```python\n# serving_client.py")
    code = text[start + len("```python\n") : text.index("```", start + 3)]
    namespace = {}
    exec(compile(code, "README.md:serving_client.py", "exec"), namespace)
    return namespace


def artifact_panoptic_quality(run, data, categories, crop_size=None, batch_size=8):
    """PQ of an artifact on a `COCOPanopticDataset`, the way `evaluate_dataset`
    scores `predict_panoptic`. With `crop_size`, the float32 artifact: the
    README client resizes and pads each image, the artifact segments the
    batch, the client restores each map. Without, the uint8 artifact takes
    the images as they are (all of its input size) and returns maps at their
    size. The segments are listed and scored as `predict_panoptic`'s are.

    Returns `(results, panoptic maps at each image's size)`.
    """
    from keras_maxdeeplab.coco.categories import contiguous_categories
    from keras_maxdeeplab.coco.panoptic_format import read_panoptic_png
    from keras_maxdeeplab.evaluation.panoptic_quality import PQStat
    from keras_maxdeeplab.postprocessing.segments import segments_from_panoptic

    client = readme_client()
    by_contiguous = contiguous_categories(categories)
    stat, maps = PQStat(), []
    for start in range(0, len(data.samples), batch_size):
        indices = range(start, min(start + batch_size, len(data.samples)))
        images = [np.asarray(data.load(index)[0]) for index in indices]
        if crop_size is None:
            outputs = run(np.stack(images).astype(np.uint8))
        else:
            outputs = run(np.stack([client["preprocess"](image, crop_size) for image in images]))
        for row, (index, image) in enumerate(zip(indices, images)):
            panoptic, scores = outputs["panoptic_pred"][row], outputs["semantic_scores"][row]
            if crop_size is not None:
                size = image.shape[:2]
                panoptic = client["restore"](panoptic, size, crop_size)
                scores = client["restore"](scores, size, crop_size)
            segmentation, segments = segments_from_panoptic(panoptic, scores, by_contiguous)
            sample = data.samples[index]
            stat.add_image(
                read_panoptic_png(sample["panoptic_file"]),
                {s["id"]: s for s in sample["segments_info"]},
                segmentation,
                {s["id"]: {"category_id": s["category_id"], "iscrowd": 0} for s in segments},
                sample["panoptic_file"],
            )
            maps.append(panoptic)
    return stat.summary({c["id"]: c for c in data.categories}), maps
