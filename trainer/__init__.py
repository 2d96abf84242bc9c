"""Fine-tunes BERT-family encoders for text classification, on one device, many, or a cluster."""

import os

# The models are tf_keras (Keras 2) models, as TF Hub layers need. Set before TensorFlow is imported, this
# makes tf.keras mean tf_keras too, and TensorFlow then skips importing Keras 3: about 2 s of every
# process's start-up. A TF_USE_LEGACY_KERAS already in the environment is kept.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
