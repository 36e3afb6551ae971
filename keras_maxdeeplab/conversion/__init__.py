"""deeplab2 checkpoint conversion."""

from keras_maxdeeplab.conversion.deeplab2 import deeplab2_key_to_path
from keras_maxdeeplab.conversion.deeplab2 import load_deeplab2_checkpoint
from keras_maxdeeplab.conversion.deeplab2 import match_checkpoint
from keras_maxdeeplab.conversion.deeplab2 import read_checkpoint
from keras_maxdeeplab.conversion.convert import build_model
from keras_maxdeeplab.conversion.convert import convert_checkpoint
