"""mtal: multi-task active learning for dense vision tasks on PyTorch Lightning.

Importing ``mtal`` is cheap: heavy dependencies (torch, lightning, faiss) are
imported by the submodules that need them.
"""

__version__ = "0.1.0"
