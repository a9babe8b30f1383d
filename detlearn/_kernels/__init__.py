"""Fast kernels behind detlearn's readable public functions (private).

Each kernel computes exactly what a public function defines in plain PyTorch,
faster; the public function dispatches to it, and the tests assert that both
give identical results. Kernels trust their inputs: the public entry points
validate them first. Chapters never show this package.
"""
