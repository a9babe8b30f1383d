"""The models: nn.Modules composed from detlearn's building blocks.

* :class:`Classifier` (chapter 2): backbone -> global pooling -> linear -> logits.
* :class:`Localizer` (chapter 4): one object's class and box, multi-task loss.
* :class:`TinyDetector` (chapter 11): single-stage anchor-based detector.
* :class:`TwoStageDetector` (chapter 13): a TinyDetector whose detections a second
  stage (RoIAlign, :class:`RoIHead`) classifies and regresses again.
* :func:`dihedral` and :func:`detect_views`: the 8 flips and transpositions of
  a square image, for augmentation and test-time augmentation.
* :func:`resize_and_pad` and :func:`restore_boxes` (:mod:`detlearn.models.transform`):
  how the detectors batch images of different sizes and give boxes back in each
  image's own pixels.

Each keeps its settings in one frozen dataclass, ``model.config``
(:class:`ClassifierConfig`, :class:`LocalizerConfig`, :class:`DetectorConfig`,
:class:`TwoStageConfig`),
checked once when it is made and saved in checkpoints as a plain dict.

All follow torchvision's calling convention: in training mode
``model(images, targets)`` returns a dict of named losses (sum them to train);
in eval mode ``model(images)`` returns one dict per image.
"""

from detlearn.models.backbone import Backbone, conv_bn_relu
from detlearn.models.classifier import Classifier, ClassifierConfig
from detlearn.models.detector import DetectorConfig, TinyDetector
from detlearn.models.heads import BoxHead, ClassificationHead, DenseHead
from detlearn.models.localizer import Localizer, LocalizerConfig
from detlearn.models.transform import resize_and_pad, restore_boxes
from detlearn.models.two_stage import RoIHead, TwoStageConfig, TwoStageDetector
from detlearn.models.views import detect_views, dihedral

__all__ = [
    "Backbone",
    "BoxHead",
    "ClassificationHead",
    "Classifier",
    "ClassifierConfig",
    "DenseHead",
    "DetectorConfig",
    "Localizer",
    "LocalizerConfig",
    "RoIHead",
    "TinyDetector",
    "TwoStageConfig",
    "TwoStageDetector",
    "conv_bn_relu",
    "detect_views",
    "dihedral",
    "resize_and_pad",
    "restore_boxes",
]
