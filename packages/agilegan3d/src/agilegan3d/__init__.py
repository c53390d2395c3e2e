"""Few-shot 3D portrait stylisation by augmented transfer learning (AgileGAN3D, arXiv 2303.14297) on EG3D."""
