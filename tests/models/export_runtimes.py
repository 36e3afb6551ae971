"""Runs an exported artifact with its own runtime alone (no Keras, no keras_maxdeeplab):
what a client of the artifact does. Each returns `{name: numpy array}`."""

import numpy as np


def run_saved_model(path, images):
    import tensorflow as tf

    serve = tf.saved_model.load(path).signatures["serving_default"]
    return {k: v.numpy() for k, v in serve(images=tf.constant(images)).items()}


def run_onnx(path, images):
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {session.get_inputs()[0].name: images})))


def run_litert(path, images):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    runner = interpreter.get_signature_runner()
    return {k: np.asarray(v) for k, v in runner(images=images).items()}


def run_torch_export(path, images):
    import torch

    module = torch.export.load(path).module()
    with torch.no_grad():
        outputs = module(torch.from_numpy(images))
    return {k: v.numpy() for k, v in outputs.items()}


RUNTIMES = {
    "tf_saved_model": run_saved_model,
    "onnx": run_onnx,
    "litert": run_litert,
    "torch": run_torch_export,
}
