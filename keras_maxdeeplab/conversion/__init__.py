"""deeplab2 checkpoint conversion: strict variable mapping, preset folders, and
presets converted on first use from deeplab2's published archives."""

from keras_maxdeeplab.conversion.convert import build_model
from keras_maxdeeplab.conversion.convert import convert_checkpoint
from keras_maxdeeplab.conversion.convert import convert_imagenet_backbone
from keras_maxdeeplab.conversion.convert import convert_kmax_checkpoint
from keras_maxdeeplab.conversion.convert import convert_preset
from keras_maxdeeplab.conversion.deeplab2 import deeplab2_key_to_path
from keras_maxdeeplab.conversion.deeplab2 import kmax_key_to_path
from keras_maxdeeplab.conversion.deeplab2 import load_kmax_checkpoint
from keras_maxdeeplab.conversion.deeplab2 import load_deeplab2_checkpoint
from keras_maxdeeplab.conversion.deeplab2 import match_checkpoint
from keras_maxdeeplab.conversion.deeplab2 import open_checkpoint
from keras_maxdeeplab.conversion.deeplab2 import read_checkpoint
from keras_maxdeeplab.conversion.imagenet import load_imagenet_backbone
