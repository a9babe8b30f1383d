"""detlearn: the small PyTorch package behind the book
*From classification to detection*.

Layers (imports only point down)::

    viz, train                      presentation and loops
    models                          nn.Modules built from the blocks below
    evaluate, data                  COCO metrics, synthetic scenes
    nms, losses, anchors            detection building blocks
    boxes, _checks                  box geometry, input validation

Import what you need from its module, e.g. ``from detlearn.boxes import box_iou``.
"""

__version__ = "0.1.0"
