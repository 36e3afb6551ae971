"""Loads an exported artifact with its own runtime alone (no Keras, no
keras_maxdeeplab), as a client of the artifact does: each loader returns a
function from an `[B, H, W, 3]` image batch to `{output name: numpy array}`."""

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
    "litert": load_litert,
    "torch": load_torch_export,
}
