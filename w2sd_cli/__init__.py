"""w2sd: weak-to-strong diffusion with reflection (Bai, Sugiyama & Xie, arXiv 2502.00473)."""

__version__ = "0.1.0"
