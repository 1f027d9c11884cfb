"""Shapes world and w2sd's embedded default pair: the world, its checker, training and evaluation."""
