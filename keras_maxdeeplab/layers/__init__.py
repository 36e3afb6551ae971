"""Backend-agnostic MaX-DeepLab layers (keras.ops only)."""

from keras_maxdeeplab.layers.axial_attention import AxialAttention
from keras_maxdeeplab.layers.axial_attention import AxialAttention2D
from keras_maxdeeplab.layers.axial_attention import RelativePositionalEncoding
from keras_maxdeeplab.layers.batch_norm import MultiAxisBatchNormalization
from keras_maxdeeplab.layers.blocks import AxialBlock
from keras_maxdeeplab.layers.blocks import BlockGroup
from keras_maxdeeplab.layers.blocks import InceptionStem
from keras_maxdeeplab.layers.convolutions import Conv1D
from keras_maxdeeplab.layers.convolutions import Conv2DSame
from keras_maxdeeplab.layers.convolutions import SeparableConv2DSame
from keras_maxdeeplab.layers.drop_path import DropPath
from keras_maxdeeplab.layers.dual_path_transformer import AttentionOperation
from keras_maxdeeplab.layers.dual_path_transformer import DualPathTransformer
from keras_maxdeeplab.layers.dual_path_transformer import MemoryFeature
from keras_maxdeeplab.layers.dual_path_transformer import recording_attention
from keras_maxdeeplab.layers.heads import ASPP
from keras_maxdeeplab.layers.heads import MaskLogits
from keras_maxdeeplab.layers.heads import PredictionHead
from keras_maxdeeplab.layers.heads import SemanticDecoder
from keras_maxdeeplab.layers.heads import TransformerClassHead
from keras_maxdeeplab.layers.resize import resize_bilinear_align_corners
from keras_maxdeeplab.layers.resized_fuse import ResizedFuse
