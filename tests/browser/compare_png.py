"""PSNR of two PNGs over RGB, and their text chunks, as one JSON line (used by the browser tests).

    .venv/bin/python tests/browser/compare_png.py a.png b.png
"""

import json
import sys

import numpy as np
from PIL import Image


def load(path):
    image = Image.open(path)
    image.load()
    return np.asarray(image.convert("RGB"), dtype=np.float64), dict(image.text), list(image.size)


a, text_a, size_a = load(sys.argv[1])
b, text_b, size_b = load(sys.argv[2])
if a.shape != b.shape:
    psnr = None
else:
    mse = float(np.mean((a - b) ** 2))
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
print(json.dumps({"psnr": psnr if psnr != float("inf") else 999.0, "text_a": text_a, "text_b": text_b,
                  "size_a": size_a, "size_b": size_b}))
