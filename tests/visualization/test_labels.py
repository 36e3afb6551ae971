import numpy as np

from keras_maxdeeplab.visualization.labels import label_anchor
from keras_maxdeeplab.visualization.labels import label_text


def test_anchor_of_a_rectangle_is_its_centre():
    mask = np.zeros((50, 90), bool)
    mask[10:31, 20:81] = True
    assert label_anchor(mask) == (20, 50)


def test_anchor_of_a_ring_lies_on_the_ring_away_from_its_edges():
    rows, cols = np.mgrid[:101, :101]
    radius = np.hypot(rows - 50, cols - 50)
    ring = (radius >= 30) & (radius <= 44)
    row, col = label_anchor(ring)
    assert ring[row, col]
    assert 33 <= np.hypot(row - 50, col - 50) <= 41


def test_anchor_of_a_segment_on_the_image_border_stays_off_the_border():
    mask = np.zeros((40, 40), bool)
    mask[:, :9] = True
    row, col = label_anchor(mask)
    assert mask[row, col] and 2 <= col <= 6


def test_label_text():
    assert label_text({"label": "person", "score": 0.9349}) == "person 0.93"
    assert label_text({"label": "person", "iscrowd": True}) == "person (crowd)"
    assert label_text({"label": "sky"}) == "sky"


def test_anchor_moves_towards_the_centroid_when_deep_enough():
    # A 40x40 square with a long 24-pixel-thick arm: the deepest point is in
    # the square, but the arm is deep enough and nearer the centroid (col ~86).
    mask = np.zeros((40, 200), bool)
    mask[:, :40] = True
    mask[8:32, 40:] = True
    row, col = label_anchor(mask)
    assert mask[row, col] and 15 <= row <= 24 and 75 <= col <= 100
