"""Heads grafted onto a bundle's frozen network: a fracture detector and an orientation classifier.

``fracsight detector train BUNDLE OUT --data DIR`` caches the network's features of the
training images (:mod:`.prepare`), trains the heads on them (:mod:`.train`, torch), joins
them to the bundle's ONNX graph (:mod:`.graft`) and writes a new bundle whose boxes come
from the detector and whose predictor turns rotated radiographs upright first.
Importing this package loads neither torch nor onnxruntime.
"""
