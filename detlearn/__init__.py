"""detlearn: the small PyTorch package behind the book
*From classification to detection*.

Layers (imports only point down)::

    __main__                        the command line (also under torchrun)
    train                           fit loop, evaluation helpers, checkpoints
    distributed                     torchrun process groups, shards, BatchNorm
    models                          nn.Modules built from the blocks below
    evaluate, data, viz, windows    COCO metrics, datasets, pictures, sliding windows
    coco_data, nms, losses,         COCO folders, detection building blocks
      anchors, roi
    boxes, _checks, _kernels        box geometry, input validation, fast kernels

Import what you need from its module, e.g. ``from detlearn.boxes import box_iou``.
"""

__version__ = "0.1.0"
