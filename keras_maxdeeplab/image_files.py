"""Reading images from files: the one reader of the CLI, the demo and the tools.

PIL decodes them, as users' own code would; the training data pipeline decodes
with TensorFlow instead, to match deeplab2's input reader bit for bit.
"""

import os

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def list_images(paths):
    """Image files among `paths`, folders expanded (sorted); a ValueError for none.

    Example:
    >>> list_images(["photos/", "extra.jpg"])  # ['photos/a.jpg', 'photos/b.png', 'extra.jpg']
    """
    files = []
    for path in paths:
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
            files += [os.path.join(path, name) for name in names]
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise ValueError(f"{path}: no such image file or folder.")
    if not files:
        raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(paths)}.")
    return files


def read_image(path):
    """The image at `path` as `[H, W, 3]` uint8 RGB, or a ValueError naming the file.

    16-bit grayscale images (PIL modes `I;16*`, 16-bit PNGs) keep their high
    byte (`value // 256`); PIL reads 16-bit colour PNGs that way itself.
    32-bit integer and float images are refused: no 8-bit rule fits them all.

    Example:
    >>> read_image("photo.jpg").shape  # (480, 640, 3)
    """
    try:
        with Image.open(path) as image:
            if image.mode.startswith("I;16"):
                gray = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=-1)
            if image.mode in ("I", "F"):
                raise ValueError(
                    f"Cannot read image {path}: 32-bit {'float' if image.mode == 'F' else 'integer'} "
                    f"pixels (PIL mode {image.mode}); convert it to 8-bit RGB first."
                )
            return np.asarray(image.convert("RGB"))
    except OSError as error:
        raise ValueError(f"Cannot read image {path}: {error}") from error


def read_images(paths):
    """`(file name, [H, W, 3] uint8 image)` pairs, read one at a time.

    Example:
    >>> for name, image in read_images(list_images(["photos/"])): ...
    """
    return ((os.path.basename(path), read_image(path)) for path in paths)
