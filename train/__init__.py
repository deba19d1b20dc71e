"""lunarseg.train: build and fit the Keras (tf_keras) U-Net; pruning and quantization-aware training."""
import os

# tfmot works only with Keras 2: this must be set before TensorFlow is imported anywhere.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
