"""Drawing panoptic results: colours, overlays, labels and figures."""

from keras_maxdeeplab.coco.panoptic_format import coco_panoptic_to_segments
from keras_maxdeeplab.visualization.colors import category_color
from keras_maxdeeplab.visualization.colors import colorize_panoptic
from keras_maxdeeplab.visualization.colors import segment_colors
from keras_maxdeeplab.visualization.labels import draw_segment_labels
from keras_maxdeeplab.visualization.overlay import overlay_panoptic
from keras_maxdeeplab.visualization.overlay import segment_boundaries
from keras_maxdeeplab.visualization.plot import plot_panoptic
