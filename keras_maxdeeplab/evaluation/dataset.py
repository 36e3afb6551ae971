"""PQ of a model on a COCO-panoptic dataset, at each image's original size."""

from keras_maxdeeplab.coco.panoptic_format import read_panoptic_png
from keras_maxdeeplab.evaluation.panoptic_quality import PQStat


def evaluate_dataset(model, data):
    """Segments every image of `data` with `model.predict_panoptic` and scores
    it against the ground-truth PNG + JSON with the official COCO rules, as
    `pq_compute` would score the exported predictions.

    Args:
        model: a `MaXDeepLab` whose categories are the dataset's.
        data: a `keras_maxdeeplab.data.COCOPanopticDataset`.

    Returns:
        `(results, predictions)`: `pq_compute`'s structure (All / Things /
        Stuff / per_class) and the `predict_panoptic` result of each image.

    Example:
    >>> results, _ = evaluate_dataset(model, COCOPanopticDataset(images, pngs, json_file))
    >>> results["All"]["pq"]
    """
    stat = PQStat()
    predictions = []
    for index, sample in enumerate(data.samples):
        image, _ = data.load(index)
        (result,) = model.predict_panoptic(image)
        predicted = {
            s["id"]: {"category_id": s["category_id"], "iscrowd": 0, "area": s["area"]}
            for s in result["segments_info"]
        }
        stat.add_image(
            read_panoptic_png(sample["panoptic_file"]),
            {s["id"]: s for s in sample["segments_info"]},
            result["segmentation"],
            predicted,
            sample["panoptic_file"],
        )
        predictions.append(result)
    return stat.summary({c["id"]: c for c in data.categories}), predictions
